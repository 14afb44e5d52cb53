"""Kokoro-FastAPI's extra request fields, so its clients work against this server unchanged.

Kokoro-FastAPI (remsky/Kokoro-FastAPI) extends OpenAI's speech body. What means something here is
accepted; what this server cannot do is a 400 that says why, never silently ignored:

* ``lang_code``: Kokoro's one-letter pipeline codes; ``a``/``b`` (American/British English) -> ``en``,
  ``z`` -> ``zh``, ``j`` -> ``ja``; our own codes (``en``, ``yue`` ...) are taken too. Its other
  languages (es, fr, hi, it, pt-br) have no frontend here.
* ``stream``: true (its default) streams; false sends the whole file with a Content-Length.
* ``volume_multiplier``: scales the samples (clipped), in (0, 4].
* ``normalization_options``: our frontend always normalizes numbers, dates and symbols per language;
  ``normalize: false`` cannot be honoured. Kokoro's finer toggles (url, email, unit, phone ...)
  are accepted as booleans but our frontend has no such switches.
* ``return_download_link`` / ``download_format``, ``return_timestamps`` / ``return_timing``,
  ``allow_voice_tags``, ``ssml``: only their "off" values; this server keeps no files, has no word
  timings, voice tags or SSML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dora_gpt_sovits.text.language import SUPPORTED_LANGUAGES

from .errors import ApiError
from .fields import number, short

LANG_CODES = {"a": "en", "b": "en", "z": "zh", "j": "ja"}
VOLUME_RANGE = (0.0, 4.0)
NORMALIZATION_TOGGLES = {
    "normalize",
    "unit_normalization",
    "url_normalization",
    "email_normalization",
    "optional_pluralization_normalization",
    "phone_normalization",
    "replace_remaining_symbols",
}
OFF_ONLY = {  # field -> why only false (or null) is accepted
    "return_download_link": "this server keeps no files: save the streamed response instead",
    "return_timestamps": "word timestamps are not produced",
    "return_timing": "per-chunk timing files are not written: see GET /v1/requests/{id}",
    "allow_voice_tags": "[voice:name] tags are not interpreted: send one request per voice",
    "ssml": "SSML is not translated: send plain text",
}
KOKORO_FIELDS = {"lang_code", "stream", "volume_multiplier", "normalization_options", "download_format", *OFF_ONLY}


@dataclass(frozen=True)
class KokoroOptions:
    language: str | None = None  # from lang_code; None = not given
    stream: bool = True  # False: the whole file at once, with a Content-Length
    gain: float = 1.0  # volume_multiplier


def parse_kokoro_fields(body: Mapping[str, Any], response_format: str) -> KokoroOptions:
    for name, why in OFF_ONLY.items():
        _off(body, name, why)
    download_format = body.get("download_format")
    if download_format is not None and download_format != response_format:
        raise ApiError(
            400,
            f"download_format {short(download_format)} is not supported: {OFF_ONLY['return_download_link']}",
            "download_format",
            "unsupported_parameter",
        )
    _normalization(body.get("normalization_options"))
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {short(stream)}", "stream", "invalid_type")
    gain = number(body, "volume_multiplier", VOLUME_RANGE, open_low=True)
    return KokoroOptions(_language(body.get("lang_code")), stream, 1.0 if gain is None else gain)


def _language(code: Any) -> str | None:
    if code is None:
        return None
    if isinstance(code, str) and code.lower() in LANG_CODES:
        return LANG_CODES[code.lower()]
    if isinstance(code, str) and code in SUPPORTED_LANGUAGES:
        return code
    raise ApiError(
        400,
        f"lang_code {short(code)} is not supported; supported: {sorted(LANG_CODES)} "
        f"(Kokoro's codes for English, Chinese, Japanese) or {list(SUPPORTED_LANGUAGES)}",
        "lang_code",
        "unsupported_value",
    )


def _off(body: Mapping[str, Any], name: str, why: str) -> None:
    value = body.get(name)
    if value is None or value is False:
        return
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {short(value)}", name, "invalid_type")
    raise ApiError(400, f"'{name}' is not supported: {why}", name, "unsupported_parameter")


def _normalization(options: Any) -> None:
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ApiError(
            400,
            f"'normalization_options' must be an object, got {short(options)}",
            "normalization_options",
            "invalid_type",
        )
    unknown = sorted(set(options) - NORMALIZATION_TOGGLES, key=str)
    if unknown:
        raise ApiError(
            400,
            f"unknown normalization option(s) {short(unknown)}; known: {sorted(NORMALIZATION_TOGGLES)}",
            "normalization_options",
            "unknown_parameter",
        )
    for name, value in options.items():
        if not isinstance(value, bool):
            raise ApiError(
                400, f"normalization option {name!r} must be true or false", "normalization_options", "invalid_type"
            )
    if options.get("normalize") is False:
        raise ApiError(
            400,
            "normalization cannot be turned off: the frontend always reads numbers, dates and symbols out "
            "per language before phonemizing",
            "normalization_options",
            "unsupported_value",
        )
