"""Public API of the text frontend: text → phone runs ready for the GPT and SoVITS.

    segments = text_to_phones("我用iPhone拍照。", "zh", "v2")
    # [PhoneSegment(language="zh", ...), PhoneSegment(language="en", ...), ...]

Each run carries the normalised text (the BERT input for Chinese runs), the phone symbols,
their ids in the version's symbol table and, for Chinese (and Cantonese), how many phones each
character of the normalised text produced (`word2ph`, used to spread BERT features over phones).
Japanese, Korean and Cantonese come from modules imported when first needed (`languages.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from . import chinese, english
from .errors import FrontendError
from .language import LANGUAGE_NAMES, SINGLE_LANGUAGES, check_language, split_languages
from .languages import language_module
from .symbols import phones_to_ids, replace_unknown

# Pause markers typed into Chinese text: each becomes a "," for G2P, then *every* comma
# phone of that text becomes the silence symbol (upstream behaviour, kept).
PAUSE_MARKERS = (("￥", "SP2"), ("^", "SP3"))
MIN_PHONES = 6  # shorter inputs get a leading "." (upstream: stabilises very short prompts)


class CleanedText(NamedTuple):
    """Upstream `clean_text` result; unpacks as (phones, word2ph, norm_text)."""

    phones: list[str]
    word2ph: list[int] | None
    norm_text: str


@dataclass
class PhoneSegment:
    language: str  # one of language.SINGLE_LANGUAGES
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None  # per character of norm_text (Chinese and Cantonese only)

    def __len__(self) -> int:
        return len(self.phones)


def base_language(language: str) -> str:
    lang = language[4:] if language.startswith("all_") else language
    if lang not in SINGLE_LANGUAGES:
        check_language(language)  # raises with the list of supported codes
        raise FrontendError(f"clean_text needs a single language ({', '.join(SINGLE_LANGUAGES)}), got {language!r}")
    return lang


def _clean_chinese(text: str, version: str) -> CleanedText:
    silence = None
    for marker, symbol in PAUSE_MARKERS:
        if marker in text:
            text, silence = text.replace(marker, ","), symbol
            break
    norm_text = chinese.text_normalize(text)
    result = chinese.g2p(norm_text, version)
    phones = result.phones
    if silence:
        phones = [silence if p == "," else p for p in phones]
    return CleanedText(phones, result.word2ph, norm_text)


def _clean_english(text: str) -> CleanedText:
    norm_text = english.text_normalize(text)
    phones = english.g2p(norm_text)
    if len(phones) < 4:
        phones = [","] + phones  # very short English gets a leading pause, as upstream
    return CleanedText(phones, None, norm_text)


# Upstream's v1 frontend has Chinese, Japanese and English only (its v1 table has no Korean or
# Cantonese phones; upstream would silently read such text as an empty English one).
V1_LANGUAGES = ("zh", "ja", "en")


def _clean_module(text: str, lang: str, version: str) -> CleanedText:
    if version == "v1" and lang not in V1_LANGUAGES:
        raise FrontendError(f"{LANGUAGE_NAMES[lang]} ({lang!r}) needs a v2 or later model; v1 has no {lang} phones")
    module = language_module(lang)
    norm_text = module.normalize(text)
    phones, word2ph = module.g2p(norm_text, version)
    return CleanedText(list(phones), word2ph, norm_text)


def clean_text(text: str, language: str, version: str = "v2") -> CleanedText:
    """Upstream `text.cleaner.clean_text` for one language (zh, en, ja, ko, yue; an `all_`
    prefix is ignored): normalise, G2P, map phones outside the version's symbol table to UNK.
    v1 uses the v1 Chinese frontend (no erhua) and symbol table."""
    if not isinstance(text, str) or not text.strip():
        raise FrontendError("text is empty")
    lang = base_language(language)
    if lang == "zh":
        cleaned = _clean_chinese(text, version)
    elif lang == "en":
        cleaned = _clean_english(text)
    else:
        cleaned = _clean_module(text, lang, version)
    return CleanedText(replace_unknown(cleaned.phones, version), cleaned.word2ph, cleaned.norm_text)


def is_speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _segments(text: str, language: str, version: str) -> list[PhoneSegment]:
    segments = []
    for run in split_languages(text, language):
        if not is_speakable(run.text) and segments:
            continue  # stray punctuation between runs
        phones, word2ph, norm_text = clean_text(run.text, run.language, version) if run.text.strip() else ([], None, "")
        if phones:
            segments.append(PhoneSegment(run.language, norm_text, phones, phones_to_ids(phones, version), word2ph))
    return segments


def text_to_phones(
    text: str, language: str = "zh", version: str = "v2", min_phones: int = MIN_PHONES
) -> list[PhoneSegment]:
    """Mixed-language text → one PhoneSegment per language run (upstream
    `get_phones_and_bert` minus the BERT part). Raises FrontendError for empty or
    unspeakable text and for unknown or unsupported language codes."""
    if not isinstance(text, str):
        raise FrontendError(f"text must be a string, got {type(text).__name__}")
    check_language(language)
    text = re.sub(r" {2,}", " ", text)
    if not text.strip():
        raise FrontendError("text is empty")
    if not is_speakable(text):
        raise FrontendError(f"text has nothing to speak (only punctuation/symbols): {text!r}")
    segments = _segments(text, language, version)
    if sum(len(s) for s in segments) < min_phones:
        segments = _segments("." + text, language, version)
    if not segments:
        raise FrontendError(f"text has nothing the {language!r} frontend can speak: {text!r}")
    return segments


def joined_phone_ids(segments: list[PhoneSegment]) -> list[int]:
    return [i for s in segments for i in s.phone_ids]


def joined_norm_text(segments: list[PhoneSegment]) -> str:
    return "".join(s.norm_text for s in segments)
