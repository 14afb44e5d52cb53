"""The speech request of OpenAI's audio API, checked: what we accept and the 4xx errors we give.

OpenAI's body is ``{model, input, voice, response_format, speed, instructions, stream_format}``;
we add the engine's own sampling knobs (``top_k``, ``top_p``, ``temperature``), ``language``, and
for v3/v4 models ``sample_steps`` (flow-matching steps; a v1/v2 graph has none and ignores it).
Kokoro-FastAPI's extra fields are checked by :mod:`.kokoro`. ``response_format`` defaults to mp3
as OpenAI's does; ``voice`` may be one of OpenAI's names that voices.yml maps onto a voice
(``aliases``). ``instructions`` is refused unless empty: GPT-SoVITS speaks in the style of the
voice's reference recording and follows no spoken-style prompt (docs/openai-api.md says why a 400).
Every refusal is an :class:`ApiError` that the app turns into OpenAI's error JSON
``{"error": {"message", "type", "param", "code"}}``.

Any JSON value in any field gets a 400 naming the field, never a server error: strings with a lone
surrogate (``"\ud800"``: valid JSON, but no UTF-8 message can carry it) are refused, and numbers are
compared as they came (a 400-digit integer or ``1e400`` is out of range, not an overflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.text.language import SUPPORTED_LANGUAGES as LANGUAGES

from .audio_encoding import FORMATS
from .errors import ApiError
from .fields import ascii_name, number, short
from .kokoro import KOKORO_FIELDS, KokoroOptions, parse_kokoro_fields

MODEL_ID = "gpt-sovits"
# OpenAI's model names (and Kokoro-FastAPI's) are accepted too, so clients configured for them work unchanged.
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "kokoro")
DEFAULT_FORMAT = "mp3"  # OpenAI's default when response_format is absent
STREAM_FORMATS = ("audio", "sse")  # raw bytes, or OpenAI's server-sent events with base64 audio
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
    *KOKORO_FIELDS,
}


@dataclass(frozen=True)
class Limits:
    max_input_chars: int = 4096  # OpenAI's limit for /v1/audio/speech


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    voice: str
    response_format: str = DEFAULT_FORMAT
    language: str = "auto"
    options: m.RequestOptions = field(default_factory=m.RequestOptions)
    stream_format: str = "audio"
    kokoro: KokoroOptions = field(default_factory=KokoroOptions)

    def text_request(self, utterance_id: str, received_at: float) -> m.TextRequest:
        """The ``text`` message that starts this request's utterance."""
        return m.TextRequest(self.input, self.language, self.voice, utterance_id, received_at, self.options)

    def text_metadata(self, utterance_id: str, received_at: float) -> dict[str, Any]:
        """Metadata of the ``text`` message that starts this request's utterance."""
        return self.text_request(utterance_id, received_at).metadata()


def parse_speech_request(
    body: Any, voices: list[str], limits: Limits = Limits(), aliases: Mapping[str, str] | None = None
) -> SpeechRequest:
    """Check a decoded JSON body; raise :class:`ApiError` (400) naming the first bad field.
    ``aliases`` maps other names (OpenAI's ``alloy`` ...) onto names in ``voices``."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {short(unknown)}; accepted: {sorted(KNOWN_FIELDS)}",
            ascii_name(unknown[0]),
            "unknown_parameter",
        )
    model = body.get("model", MODEL_ID)
    if model not in (MODEL_ID, *MODEL_ALIASES):
        raise ApiError(
            400, f"unknown model {short(model)}; available: {[MODEL_ID, *MODEL_ALIASES]}", "model", "model_not_found"
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
    voice = _voice(body.get("voice"), voices, aliases or {})
    response_format = body.get("response_format", DEFAULT_FORMAT)
    if response_format not in FORMATS:
        raise ApiError(
            400,
            f"response_format {short(response_format)} is not supported; supported: {list(FORMATS)}",
            "response_format",
            "unsupported_format",
        )
    stream_format = body.get("stream_format", "audio")
    if stream_format not in STREAM_FORMATS:
        raise ApiError(
            400,
            f"stream_format {short(stream_format)} is not supported; supported: {list(STREAM_FORMATS)}",
            "stream_format",
            "unsupported_value",
        )
    _instructions(body.get("instructions"))
    kokoro = parse_kokoro_fields(body, response_format)
    language = body.get("language", "auto")
    if kokoro.language is not None:
        if "language" in body and language != kokoro.language:
            raise ApiError(
                400,
                f"lang_code {short(body['lang_code'])} means language {kokoro.language!r}, "
                f"but language is {short(language)}; send one of them",
                "lang_code",
                "conflicting_values",
            )
        language = kokoro.language
    if not isinstance(language, str) or language not in LANGUAGES:
        raise ApiError(
            400,
            f"language {short(language)} is not supported; supported: {list(LANGUAGES)}",
            "language",
            "unsupported_value",
        )
    options = m.RequestOptions(
        top_k=number(body, "top_k", TOP_K_RANGE, integer=True),
        top_p=number(body, "top_p", TOP_P_RANGE, open_low=True),
        temperature=number(body, "temperature", TEMPERATURE_RANGE, open_low=True),
        speed=number(body, "speed", SPEED_RANGE),
        sample_steps=number(body, "sample_steps", SAMPLE_STEPS_RANGE, integer=True),
    )
    return SpeechRequest(text, voice, response_format, language, options, stream_format, kokoro)


def _instructions(instructions: Any) -> None:
    if instructions is None or (isinstance(instructions, str) and not instructions.strip()):
        return
    if not isinstance(instructions, str):
        raise ApiError(
            400, f"'instructions' must be a string, got {short(instructions)}", "instructions", "invalid_type"
        )
    raise ApiError(
        400,
        "'instructions' are not supported: GPT-SoVITS speaks in the style of the voice's reference "
        "recording and follows no style prompt; pick a voice recorded in the style you want",
        "instructions",
        "unsupported_parameter",
    )


def _voice(voice: Any, voices: list[str], aliases: Mapping[str, str]) -> str:
    if isinstance(voice, Mapping):  # OpenAI's custom-voice form {"id": ...}
        voice = voice.get("id")
    if not voices:
        raise ApiError(
            400,
            "no voice is configured on the server (GSV_VOICES, GSV_REF_AUDIO or the model directory's voices.yml)",
            "voice",
            "no_voices",
        )
    available = f"available voices: {voices}" + (f", or their aliases {sorted(aliases)}" if aliases else "")
    if not isinstance(voice, str) or not voice:
        raise ApiError(400, f"'voice' is required; {available}", "voice", "missing_voice")
    voice = aliases.get(voice, voice)
    if voice not in voices:  # registry names are valid Unicode, so this also refuses a lone surrogate
        raise ApiError(400, f"unknown voice {short(voice)}; {available}", "voice", "unknown_voice")
    return voice
