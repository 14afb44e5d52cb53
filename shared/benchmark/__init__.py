"""Benchmark suite: per-stage and end-to-end speed, the real dataflow's TTFA, and upstream side by side.

Entry point: ``scripts/bench.py`` (``python -m dora_gpt_sovits.benchmark``); see :mod:`.cli`.
"""
