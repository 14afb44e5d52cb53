"""Text frontend: normalisation, G2P, symbol ids, sentence splitting.

Public API (imported lazily so that `from dora_gpt_sovits.text.symbols import ...` stays light):
    text_to_phones, clean_text, PhoneSegment, CleanedText, FrontendError   (frontend)
    phones_to_ids, symbols_v1, symbols_v2                                  (symbols)
    prepare_sentences, StreamingSplitter, get_method                       (sentence_split)
    split_languages, SUPPORTED_LANGUAGES                                   (language)
    segment_text, TextSegment, MAX_SEGMENT_PHONES                          (segment_limits)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "text_to_phones": "frontend",
    "clean_text": "frontend",
    "PhoneSegment": "frontend",
    "CleanedText": "frontend",
    "joined_phone_ids": "frontend",
    "joined_norm_text": "frontend",
    "FrontendError": "errors",
    "phones_to_ids": "symbols",
    "cleaned_text_to_sequence": "symbols",
    "symbols_v1": "symbols",
    "symbols_v2": "symbols",
    "prepare_sentences": "sentence_split",
    "StreamingSplitter": "sentence_split",
    "get_method": "sentence_split",
    "split_languages": "language",
    "SUPPORTED_LANGUAGES": "language",
    "UnsupportedLanguageError": "language",
    "segment_text": "segment_limits",
    "TextSegment": "segment_limits",
    "MAX_SEGMENT_PHONES": "segment_limits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
