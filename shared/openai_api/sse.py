"""OpenAI's speech events (``stream_format: "sse"``): the same audio bytes, base64 in JSON events.

Each event is one ``data:`` line and a blank line, as OpenAI sends them (no ``event:`` lines):
``{"type": "speech.audio.delta", "audio": <base64 of the response_format's bytes>}`` as audio is
encoded, then ``{"type": "speech.audio.done", "usage": {input_tokens, output_tokens,
total_tokens}}``. A failure after the first event is an ``{"type": "error", "error": {...}}`` event
and no ``done``. GPT-SoVITS has no text tokenizer to bill by: ``input_tokens`` counts the input's
characters and ``output_tokens`` the semantic tokens the audio spans (25 per second, the GPT's
token rate), so both grow as OpenAI's do, with the text and with the audio.
"""

from __future__ import annotations

import base64
import json
from typing import Any

CONTENT_TYPE = "text/event-stream"
SEMANTIC_TOKENS_PER_SECOND = 25  # GPT-SoVITS v1-v4: one semantic token per 40 ms of speech


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("ascii") + b"\n\n"


def audio_delta(data: bytes) -> bytes:
    """One delta event, or nothing for no bytes (an encoder still filling its first frame)."""
    if not data:
        return b""
    return event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})


def usage(input_chars: int, audio_seconds: float) -> dict[str, int]:
    output = round(audio_seconds * SEMANTIC_TOKENS_PER_SECOND)
    return {"input_tokens": input_chars, "output_tokens": output, "total_tokens": input_chars + output}


def audio_done(input_chars: int, audio_seconds: float) -> bytes:
    return event({"type": "speech.audio.done", "usage": usage(input_chars, audio_seconds)})


def error_event(message: str, code: str) -> bytes:
    return event({"type": "error", "error": {"message": message, "type": "server_error", "param": None, "code": code}})
