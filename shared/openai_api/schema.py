"""The speech request of OpenAI's audio API, checked: what we accept and the 4xx errors we give.

OpenAI's body is ``{model, input, voice, response_format, speed, instructions}``; we add the
engine's own sampling knobs (``top_k``, ``top_p``, ``temperature``), ``language``, and for v3/v4
models ``sample_steps`` (flow-matching steps; a v1/v2 graph has none and ignores it). Every refusal
is an :class:`ApiError` that the app turns into OpenAI's error JSON
``{"error": {"message", "type", "param", "code"}}``.

Any JSON value in any field gets a 400 naming the field, never a server error: strings with a lone
surrogate (``"\ud800"``: valid JSON, but no UTF-8 message can carry it) are refused, and numbers are
compared as they came (a 400-digit integer or ``1e400`` is out of range, not an overflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.text.language import SUPPORTED_LANGUAGES as LANGUAGES

MODEL_ID = "gpt-sovits"
# OpenAI's model names are accepted too, so clients configured for OpenAI work unchanged.
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
FORMATS = ("wav", "pcm")  # both streamable as produced; mp3/opus/aac/flac would need an encoder
SPEED_RANGE = (0.25, 4.0)  # OpenAI's range; passed to the vocoder as upstream's speed factor
TOP_P_RANGE = (0.0, 1.0)
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_K_RANGE = (0, 1025)  # 0 = no top-k; the semantic vocabulary has 1025 entries
SAMPLE_STEPS_RANGE = (1, m.MAX_SAMPLE_STEPS)
KNOWN_FIELDS = {
    "model",
    "input",
    "voice",
    "response_format",
    "speed",
    "instructions",
    "stream_format",
    "top_k",
    "top_p",
    "temperature",
    "language",
    "sample_steps",
}


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = dict(headers or {})  # e.g. Retry-After on a 503

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    max_input_chars: int = 4096  # OpenAI's limit for /v1/audio/speech


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    voice: str
    response_format: str = "wav"
    language: str = "auto"
    options: m.RequestOptions = field(default_factory=m.RequestOptions)

    def text_request(self, utterance_id: str, received_at: float) -> m.TextRequest:
        """The ``text`` message that starts this request's utterance."""
        return m.TextRequest(self.input, self.language, self.voice, utterance_id, received_at, self.options)

    def text_metadata(self, utterance_id: str, received_at: float) -> dict[str, Any]:
        """Metadata of the ``text`` message that starts this request's utterance."""
        return self.text_request(utterance_id, received_at).metadata()


def parse_speech_request(body: Any, voices: list[str], limits: Limits = Limits()) -> SpeechRequest:
    """Check a decoded JSON body; raise :class:`ApiError` (400) naming the first bad field."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {_short(unknown)}; accepted: {sorted(KNOWN_FIELDS)}",
            _ascii(unknown[0]),
            "unknown_parameter",
        )
    model = body.get("model", MODEL_ID)
    if model not in (MODEL_ID, *MODEL_ALIASES):
        raise ApiError(
            400, f"unknown model {_short(model)}; available: {[MODEL_ID, *MODEL_ALIASES]}", "model", "model_not_found"
        )
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(
            400,
            "'input' must be a non-empty string",
            "input",
            "empty_input" if isinstance(text, str) else "invalid_type",
        )
    if len(text) > limits.max_input_chars:
        raise ApiError(
            400, f"'input' has {len(text)} characters; the limit is {limits.max_input_chars}", "input", "input_too_long"
        )
    if (problem := m.unicode_problem(text)) is not None:
        raise ApiError(400, f"'input' cannot be spoken: {problem}", "input", "invalid_unicode")
    voice = _voice(body.get("voice"), voices)
    response_format = body.get("response_format", "wav")
    if response_format not in FORMATS:
        raise ApiError(
            400,
            f"response_format {_short(response_format)} is not supported; supported: {list(FORMATS)}",
            "response_format",
            "unsupported_format",
        )
    if body.get("stream_format", "audio") != "audio":
        raise ApiError(
            400,
            "only stream_format 'audio' is supported (raw audio bytes, streamed)",
            "stream_format",
            "unsupported_value",
        )
    language = body.get("language", "auto")
    if language not in LANGUAGES:
        raise ApiError(
            400,
            f"language {_short(language)} is not supported; supported: {list(LANGUAGES)}",
            "language",
            "unsupported_value",
        )
    options = m.RequestOptions(
        top_k=_number(body, "top_k", TOP_K_RANGE, integer=True),
        top_p=_number(body, "top_p", TOP_P_RANGE, open_low=True),
        temperature=_number(body, "temperature", TEMPERATURE_RANGE, open_low=True),
        speed=_number(body, "speed", SPEED_RANGE),
        sample_steps=_number(body, "sample_steps", SAMPLE_STEPS_RANGE, integer=True),
    )
    return SpeechRequest(text, voice, response_format, language, options)


def _voice(voice: Any, voices: list[str]) -> str:
    if isinstance(voice, Mapping):  # OpenAI's custom-voice form {"id": ...}
        voice = voice.get("id")
    if not voices:
        raise ApiError(
            400,
            "no voice is configured on the server (GSV_VOICES, GSV_REF_AUDIO or the model directory's voices.yml)",
            "voice",
            "no_voices",
        )
    if not isinstance(voice, str) or not voice:
        raise ApiError(400, f"'voice' is required; available voices: {voices}", "voice", "missing_voice")
    if voice not in voices:  # registry names are valid Unicode, so this also refuses a lone surrogate
        raise ApiError(400, f"unknown voice {_short(voice)}; available voices: {voices}", "voice", "unknown_voice")
    return voice


def _number(
    body: Mapping[str, Any], name: str, bounds: tuple[float, float], integer: bool = False, open_low: bool = False
) -> Any:
    """An optional number within ``bounds`` (``open_low``: the lower bound itself is excluded)."""
    value = body.get(name)
    if value is None:
        return None
    wanted = "an integer" if integer else "a number"
    # An int is checked as an int: float() of a 400-digit integer raises OverflowError.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and isinstance(value, float) and not value.is_integer())
    ):
        raise ApiError(400, f"'{name}' must be {wanted}, got {_short(value)}", name, "invalid_type")
    low, high = bounds
    if (
        (isinstance(value, float) and not math.isfinite(value))
        or value > high
        or value < low
        or (open_low and value == low)
    ):
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ApiError(400, f"'{name}' must be in {interval}, got {_short(value)}", name, "out_of_range")
    return int(value) if integer else float(value)


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message: ascii() (a lone surrogate stays printable), at most ``limit``
    characters (a client's megabyte of JSON is not echoed back). repr of a huge int is not even made."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ascii(value: Any) -> str:
    return value if isinstance(value, str) and value.isascii() else _short(value)
