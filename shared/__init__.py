"""dora_gpt_sovits: the library every node of the GPT-SoVITS dataflow shares.

Lives in the repository's ``shared/`` folder; installed under this import name.
"""
