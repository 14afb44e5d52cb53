"""Mandarin G2P: normalised text → phones and per-character phone counts (word2ph).

Two variants as upstream: v1 (`chinese`) and v2+ (`chinese2`). Both segment with jieba
(POS-tagged), merge words for tone sandhi, take dictionary pinyin from pypinyin and apply
the sandhi rules; v2 also merges erhua and, when a g2pW model is configured, takes
polyphone readings from it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

from . import g2pw
from .chinese_normalize import normalize_chinese
from .erhua import apply_erhua
from .jieba_seg import pos_cut
from .pinyin_phones import pinyin_to_phones
from .symbols import PUNCTUATION, UNK
from .tone_sandhi import apply_tone_sandhi, merge_for_sandhi

log = logging.getLogger(__name__)

RE_AFTER_PUNCT = re.compile(r"(?<=[{}])\s*".format(re.escape("".join(PUNCTUATION))))
RE_LATIN = re.compile(r"[a-zA-Z]+")


@dataclass
class ChinesePhones:
    phones: list[str]
    word2ph: list[int]  # one entry per character of the normalised text


def text_normalize(text: str) -> str:
    return normalize_chinese(text)


def split_clauses(text: str) -> list[str]:
    return [s for s in RE_AFTER_PUNCT.split(text) if s.strip()]


def dictionary_pinyin(word: str) -> tuple[list[str], list[str]]:
    """Strict initials and tone-3 finals (neutral = 5) of a word, from pypinyin's phrase data."""
    initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
    return initials, finals


def split_pinyins(pinyins: list[str]) -> tuple[list[str], list[str]]:
    """Tone-3 pinyin strings (g2pW output) → initials and finals; punctuation passes through."""
    initials, finals = [], []
    for p in pinyins:
        if p[:1].isalpha():
            initials.append(to_initials(p))
            finals.append(to_finals_tone3(p, neutral_tone_with_five=True))
        else:
            initials.append(p)
            finals.append(p)
    return initials, finals


def syllable_phones(initial: str, final: str) -> list[str]:
    """One character's phones: punctuation stays one phone, a syllable becomes two."""
    if initial == final:
        return [initial] if initial in PUNCTUATION else [UNK]
    phones = pinyin_to_phones(initial, final)
    if phones is None:
        # e.g. interjections read as a bare nasal (ng2); upstream would fail an assertion.
        log.warning("pinyin %r+%r has no phones in the symbol set; using UNK", initial, final)
        return [UNK, UNK]
    return phones


def clause_pinyin(clause: str, version: str) -> tuple[list[str], list[str]]:
    """Initials and finals, after sandhi (and erhua for v2), for every character of a clause."""
    words = merge_for_sandhi(pos_cut(clause))
    predicted = g2pw.predict_sentence(clause) if version != "v1" else None
    initials: list[str] = []
    finals: list[str] = []
    offset = 0
    for word, pos in words:
        start, offset = offset, offset + len(word)
        if pos == "eng":
            continue
        if predicted is not None:
            word_initials, word_finals = split_pinyins(g2pw.correct_word(word, predicted[start:offset]))
        else:
            word_initials, word_finals = dictionary_pinyin(word)
        word_finals = apply_tone_sandhi(word, pos, word_finals)
        if version != "v1":
            word_initials, word_finals = apply_erhua(word_initials, word_finals, word, pos)
        initials += word_initials
        finals += word_finals
    return initials, finals


def g2p(norm_text: str, version: str = "v2") -> ChinesePhones:
    phones: list[str] = []
    word2ph: list[int] = []
    for clause in split_clauses(norm_text):
        clause = RE_LATIN.sub("", clause)
        initials, finals = clause_pinyin(clause, version)
        for initial, final in zip(initials, finals):
            char_phones = syllable_phones(initial, final)
            phones += char_phones
            word2ph.append(len(char_phones))
    return ChinesePhones(phones, word2ph)
