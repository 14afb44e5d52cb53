"""Pinyin syllable → the two phone symbols (initial, toned final) of the v1/v2 phone set.

The phone set splits syllables the way the opencpop corpus does: zero-initial syllables get
a pseudo-initial (AA/EE/OO for a-/e-/o-, y/w for i-/ü-/u-), the apical vowels of zi/zhi get
their own finals (i0/ir), ü is written v, and yan/ye get the finals En/E. Rather than ship a
syllable table, the split is computed from these rules.
"""

from __future__ import annotations

from .symbols import ZH_FINALS

_RETROFLEX = ("zh", "ch", "sh", "r")
_DENTAL_SIBILANTS = ("z", "c", "s")
_PALATAL = ("j", "q", "x", "y")
_ONE_LETTER_INITIALS = set("bpmfdtnlgkhjqxrzcsyw")
_ZERO_INITIAL_MARKERS = {"a": "AA", "e": "EE", "o": "OO"}
_Y_FINAL_SPELLINGS = {"an": "En", "e": "E"}
# pypinyin's strict finals written in full; after a consonant pinyin contracts them.
_CONTRACTED_AFTER_INITIAL = {"uei": "ui", "iou": "iu", "uen": "un"}
_WHOLE_ZERO_INITIAL = {"i": "yi", "in": "yin", "ing": "ying", "u": "wu"}
_GLIDE_LETTERS = {"v": "yu", "i": "y", "u": "w"}


def spell_syllable(initial: str, final: str) -> str:
    """Write pypinyin's (strict initial, final without tone) as an ordinary pinyin syllable,
    e.g. ('', 'iou') -> 'you', ('d', 'uei') -> 'dui', ('', 'van') -> 'yuan'."""
    if initial:
        return initial + _CONTRACTED_AFTER_INITIAL.get(final, final)
    if final in _WHOLE_ZERO_INITIAL:
        return _WHOLE_ZERO_INITIAL[final]
    if final[:1] in _GLIDE_LETTERS:
        return _GLIDE_LETTERS[final[0]] + final[1:]
    return final


def split_syllable(syllable: str) -> tuple[str, str] | None:
    """Ordinary pinyin syllable (toneless, ü as v) -> (initial symbol, final symbol), or None
    when it is not a syllable the phone set can express (e.g. the nasal interjection 'ng')."""
    if syllable[:2] in ("zh", "ch", "sh"):
        initial = syllable[:2]
    elif syllable[:1] in _ONE_LETTER_INITIALS:
        initial = syllable[:1]
    elif syllable[:1] in _ZERO_INITIAL_MARKERS:
        return _ZERO_INITIAL_MARKERS[syllable[0]], _known_final(syllable)
    else:
        return None
    rest = syllable[len(initial) :]
    if rest == "i" and initial in _RETROFLEX:
        final = "ir"
    elif rest == "i" and initial in _DENTAL_SIBILANTS:
        final = "i0"
    elif rest[:1] == "u" and initial in _PALATAL:
        final = "v" + rest[1:]  # ju/qu/xu/yu are written u but sound ü
    elif initial == "y":
        final = _Y_FINAL_SPELLINGS.get(rest, rest)
    else:
        final = rest
    final = _known_final(final)
    return (initial, final) if final else None


def _known_final(final: str) -> str | None:
    return final if final in ZH_FINALS else None


def pinyin_to_phones(initial: str, final_with_tone: str) -> list[str] | None:
    """(strict initial, final with tone digit 1-5) -> [initial symbol, final symbol+tone]."""
    tone = final_with_tone[-1:]
    if not tone or tone not in "12345" or len(final_with_tone) < 2:
        return None
    split = split_syllable(spell_syllable(initial, final_with_tone[:-1]))
    if split is None or split[1] is None:
        return None
    return [split[0], split[1] + tone]
