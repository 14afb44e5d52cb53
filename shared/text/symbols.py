"""Phone symbol tables (v1: 322 symbols, v2: 732) and phone → id conversion.

The ids are positions in these lists, and trained checkpoints bake them into their
embedding rows, so the lists are rebuilt with upstream's construction: the union of all
base groups deduplicated and sorted with Python's default string order (v1), then the v2
extras appended unsorted-as-groups (pitch marks, sorted Korean, sorted Cantonese).
Nothing here is typed as an id.
"""

from __future__ import annotations

from functools import cache

PAD = "_"
UNK = "UNK"
# The only punctuation the Chinese/English frontends keep; "-" stands for dashes/apostrophes.
PUNCTUATION = ("!", "?", "…", ",", ".", "-")
# Full-width and other marks read as the phone set's punctuation: the map upstream repeats in its
# Chinese, Japanese and Korean frontends (each file's rep_map; the Chinese one adds a few entries).
CJK_MARK_PHONES = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}
SILENCES = ("SP", "SP2", "SP3")

# Mandarin initials as the opencpop-style tables split syllables; AA/EE/OO mark zero-initial
# syllables beginning with a/e/o, y/w the ones beginning with i/ü/u.
ZH_INITIALS = (
    "AA",
    "EE",
    "OO",
    "b",
    "c",
    "ch",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "q",
    "r",
    "s",
    "sh",
    "t",
    "w",
    "x",
    "y",
    "z",
    "zh",
)
# Finals without tone; i0 is the apical vowel after z/c/s, ir after zh/ch/sh/r,
# E is the "e" of ye/-ie written separately for y-syllables, En the "an" of yan.
ZH_FINALS = (
    "E",
    "En",
    "a",
    "ai",
    "an",
    "ang",
    "ao",
    "e",
    "ei",
    "en",
    "eng",
    "er",
    "i",
    "i0",
    "ia",
    "ian",
    "iang",
    "iao",
    "ie",
    "in",
    "ing",
    "iong",
    "ir",
    "iu",
    "o",
    "ong",
    "ou",
    "u",
    "ua",
    "uai",
    "uan",
    "uang",
    "ui",
    "un",
    "uo",
    "v",
    "van",
    "ve",
    "vn",
)
ZH_TONES = "12345"  # 5 = neutral tone

# Japanese phonemes of pyopenjtalk (v1 table carries them even though we never emit them).
JA_PHONEMES = (
    "I",
    "N",
    "U",
    "a",
    "b",
    "by",
    "ch",
    "cl",
    "d",
    "dy",
    "e",
    "f",
    "g",
    "gy",
    "h",
    "hy",
    "i",
    "j",
    "k",
    "ky",
    "m",
    "my",
    "n",
    "ny",
    "o",
    "p",
    "py",
    "r",
    "ry",
    "s",
    "sh",
    "t",
    "ts",
    "u",
    "v",
    "w",
    "y",
    "z",
)

ARPA_CONSONANTS = (
    "B",
    "CH",
    "D",
    "DH",
    "F",
    "G",
    "HH",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)
ARPA_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
# Upstream's ARPAbet set also holds two stressless vowels; they take ids, so keep them.
ARPA_STRESSLESS_EXTRAS = ("ER", "IH")

JA_PITCH_MARKS = ("[", "]")
KO_JAMO = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ"
KO_SPECIAL = ("空", "停")  # space and "anything else" in the Korean frontend

# Cantonese (Jyutping) pieces, every symbol prefixed by "Y" to keep it apart from Mandarin.
YUE_INITIALS = ("b", "c", "d", "f", "g", "gw", "h", "j", "k", "kw", "l", "m", "n", "ng", "p", "s", "t", "w", "z")
YUE_TONED_FINALS = (
    "a",
    "aa",
    "aai",
    "aak",
    "aam",
    "aan",
    "aang",
    "aap",
    "aat",
    "aau",
    "ai",
    "ak",
    "am",
    "an",
    "ang",
    "ap",
    "at",
    "au",
    "e",
    "ei",
    "ek",
    "eng",
    "eoi",
    "eon",
    "eot",
    "g",
    "i",
    "ik",
    "im",
    "in",
    "ing",
    "ip",
    "it",
    "iu",
    "k",
    "m",
    "n",
    "o",
    "oe",
    "oek",
    "oeng",
    "oi",
    "ok",
    "on",
    "ong",
    "ot",
    "ou",
    "p",
    "t",
    "u",
    "ui",
    "uk",
    "un",
    "ung",
    "ut",
    "yu",
    "yun",
    "yut",
)
# Finals that also appear without a tone digit in upstream's table.
YUE_TONELESS_FINALS = ("a", "aa", "ai", "ak", "au", "e", "o", "oi", "ok", "on", "ou", "uk")
YUE_TONES = "123456"

VERSIONS_V1 = ("v1",)


def arpabet_symbols() -> list[str]:
    stressed = [v + s for v in ARPA_VOWELS for s in "012"]
    return list(ARPA_CONSONANTS) + stressed + list(ARPA_STRESSLESS_EXTRAS)


def mandarin_symbols() -> list[str]:
    toned = [f + t for t in ZH_TONES for f in ZH_FINALS]
    return list(ZH_INITIALS) + toned


def cantonese_symbols() -> list[str]:
    plain = list(YUE_INITIALS) + list(YUE_TONELESS_FINALS)
    toned = [f + t for f in YUE_TONED_FINALS for t in YUE_TONES]
    return ["Y" + s for s in plain + toned]


def korean_symbols() -> list[str]:
    return list(KO_JAMO) + list(KO_SPECIAL)


@cache
def symbols_v1() -> tuple[str, ...]:
    base = (
        [PAD] + mandarin_symbols() + list(JA_PHONEMES) + list(PUNCTUATION) + list(SILENCES) + [UNK] + arpabet_symbols()
    )
    return tuple(sorted(set(base)))


@cache
def symbols_v2() -> tuple[str, ...]:
    return symbols_v1() + JA_PITCH_MARKS + tuple(sorted(korean_symbols())) + tuple(sorted(set(cantonese_symbols())))


def table_version(version: str) -> str:
    """Which symbol table a model version uses: only v1 has its own, every later one uses v2."""
    return "v1" if version in VERSIONS_V1 else "v2"


def symbols_for(version: str) -> tuple[str, ...]:
    return symbols_v1() if table_version(version) == "v1" else symbols_v2()


@cache
def _symbol_ids(table: str) -> dict[str, int]:
    return {s: i for i, s in enumerate(symbols_for(table))}


def symbol_to_id(version: str) -> dict[str, int]:
    return _symbol_ids(table_version(version))


def replace_unknown(phones: list[str], version: str) -> list[str]:
    """Map phones outside the version's table to UNK (what clean_text does before lookup)."""
    known = symbol_to_id(version)
    return [p if p in known else UNK for p in phones]


def phones_to_ids(phones: list[str], version: str = "v2") -> list[int]:
    """Upstream `cleaned_text_to_sequence`; unknown phones become the UNK id instead of raising."""
    ids = symbol_to_id(version)
    unk = ids[UNK]
    return [ids.get(p, unk) for p in phones]


cleaned_text_to_sequence = phones_to_ids
