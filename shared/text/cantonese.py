"""Cantonese (yue) frontend: Jyutping from ToJyutping split into "Y"-prefixed initials and toned
finals, as GPT-SoVITS' ``text/cantonese.py`` at 48b1a01 produces them.

Normalisation is the Mandarin one's sentence pipeline (numbers, dates, units spelled out in
Mandarin characters, traditional → simplified) followed by Cantonese's own punctuation table;
then everything outside CJK U+4E00-U+9FA5 and the six phone-set marks is dropped, Latin letters
included (upstream reads no English inside Cantonese text). Unlike Mandarin, 嗯/呣 are kept and
repeated marks are not collapsed.

G2P: ToJyutping gives one reading per character (chosen with its word context). A reading's last
digit is the tone; the first entry of ``JYUTPING_ONSETS`` that prefixes the rest is the initial
and what follows the final (a syllabic nasal such as "m" or "ng" gets its last letter as final).
The phones are ``"Y" + initial`` and ``"Y" + final + tone``, two per character; a mark is one phone
as it is. A character read as two syllables (卅 "saa1 aa6") still gives two phones, the second
outside the symbol table (the caller maps it to UNK, as upstream). Upstream imports cn2an but
never uses it on this path, so it is not needed here.

Cantonese exists only for v2 and later: upstream's v1 cleaner has no "yue" module.
Data (onset order, punctuation table) is in ``jyutping_table``, taken from upstream.
"""

from __future__ import annotations

import re
from functools import cache

from .chinese_normalize import normalize_sentence, split_sentences
from .errors import FrontendError, MissingLanguagePackage
from .jyutping_table import JYUTPING_ONSETS, PUNCTUATION_REWRITES
from .symbols import PUNCTUATION, table_version

_REWRITES = dict(PUNCTUATION_REWRITES)
RE_REWRITE = re.compile("|".join(re.escape(mark) for mark, _ in PUNCTUATION_REWRITES))
_MARKS = re.escape("".join(PUNCTUATION))
RE_UNSPOKEN = re.compile(rf"[^\u4e00-\u9fa5{_MARKS}]+")
RE_ONLY_MARKS = re.compile(rf"^[{_MARKS}]+$")
RE_READING = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")  # one syllable, or several separated by spaces


@cache
def _tojyutping():
    try:
        import ToJyutping
    except ImportError:
        raise MissingLanguagePackage("Cantonese", "yue") from None
    return ToJyutping


def require() -> None:
    """Raise MissingLanguagePackage now if ToJyutping is not installed."""
    _tojyutping()


def _check_version(version: str) -> None:
    if table_version(version) == "v1":
        raise FrontendError(f"Cantonese needs a v2 or later model: the {version} phone set has no Cantonese phones")


def _speakable_marks(sentence: str) -> str:
    sentence = RE_REWRITE.sub(lambda m: _REWRITES[m.group()], sentence)
    return RE_UNSPOKEN.sub("", sentence)


def normalize(text: str) -> str:
    """Upstream ``cantonese.text_normalize``."""
    return "".join(_speakable_marks(normalize_sentence(s)) for s in split_sentences(text))


def jyutping_units(norm_text: str) -> list[str]:
    """One entry per character: its Jyutping reading, or the mark itself."""
    units: list[str] = []
    for char, reading in _tojyutping().get_jyutping_list(norm_text):
        if RE_ONLY_MARKS.match(char):
            units.extend(char)
        elif reading is None or not RE_READING.match(reading):
            raise FrontendError(f"no Jyutping reading for {char!r} in Cantonese text")
        else:
            units.append(reading)
    return units


def reading_phones(reading: str) -> list[str]:
    """'keoi5' → ['Yk', 'Yeoi5']; the tone is the reading's last digit."""
    body, tone = reading[:-1], reading[-1]
    for onset in JYUTPING_ONSETS:
        if body.startswith(onset):
            final = body[len(onset) :] or onset[-1]
            return ["Y" + onset, f"Y{final}{tone}"]
    raise FrontendError(f"Jyutping {reading!r} starts with no known initial")  # none in ToJyutping's data


def g2p(norm_text: str, version: str = "v2") -> tuple[list[str], list[int]]:
    """Upstream ``cantonese.g2p``: phones (before the UNK mapping) and word2ph, one entry per
    character of ``norm_text``."""
    _check_version(version)
    phones: list[str] = []
    word2ph: list[int] = []
    for unit in jyutping_units(norm_text):
        unit_phones = [unit] if unit in PUNCTUATION else reading_phones(unit)
        phones += unit_phones
        word2ph.append(len(unit_phones))
    return phones, word2ph
