"""An OpenAI-compatible speech API (``POST /v1/audio/speech``) and a web page, served by a dora node.

``schema`` checks requests, ``audio_encoding`` turns streamed float chunks into WAV/PCM bytes,
``router`` hands each utterance's audio to the request waiting for it, ``bridge`` owns the dora
node, ``metrics`` keeps per-request timings, ``app`` is the aiohttp application.
"""
