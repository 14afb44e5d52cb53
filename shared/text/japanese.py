"""Japanese frontend: OpenJTalk (pyopenjtalk-plus, dictionary inside the wheel) phonemes with
accent-phrase prosody marks, as GPT-SoVITS' ``text/japanese.py`` at 48b1a01 produces them.

The text is cut at every character outside the "Japanese" class below (punctuation, spaces,
symbols); each run of Japanese characters goes through OpenJTalk, each cut character is kept as a
phone (a space is dropped, full-width marks become their ASCII pause). Latin letters are
lower-cased first and read by OpenJTalk. Prosody marks (``[`` pitch rise, ``]`` pitch fall, ``#``
accent-phrase border, ``_`` pause) are always emitted: upstream passes them for every model
version, and the v1 table maps those it lacks to UNK (done by the caller).

Data taken from upstream (RVC-Boss/GPT-SoVITS, GPT_SoVITS/text/japanese.py, commit
48b1a0169a28582a8984402f82cf438d3bfa6aca, MIT licence): the character class, the mark → pause
table and the "％" reading. The prosody rules are those of ESPnet's ``pyopenjtalk_g2p_prosody``
(Apache-2.0), which upstream uses.

User dictionary: upstream compiles ``ja_userdic/userdict.csv`` (a MeCab CSV) next to its source,
re-compiling when the CSV's md5 changes, and loads it into OpenJTalk. :func:`use_user_dictionary`
does the same for a CSV the user names; none is bundled (upstream's at 48b1a01 is a 17 MB git-LFS
file of katakana readings for English words, see docs/languages.md).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

from .errors import MissingLanguagePackage
from .symbols import CJK_MARK_PHONES

# Characters OpenJTalk reads (upstream's class, verbatim ranges): ASCII letters and digits, 々,
# kana, CJK ideographs, full-width 1-9 (not 0) and letters, half-width katakana.
_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
RE_NOT_JA = re.compile(f"[^{_JA_CHARS}]")
RE_JA_START = re.compile(f"[{_JA_CHARS}]")
SYMBOL_READINGS = (("％", "パーセント"),)
MARK_TO_PHONE = CJK_MARK_PHONES
# Upstream's punctuation list (text/symbols.py): a run of them collapses to its first.
RE_REPEATED_PUNCT = re.compile(r"([!?…,.\-])([!?…,.\-])+")

# HTS full-context label fields the prosody marks are read from.
_RE_P3 = re.compile(r"\-(.*?)\+")
_RE_A1 = re.compile(r"/A:([0-9\-]+)\+")
_RE_A2 = re.compile(r"\+(\d+)\+")
_RE_A3 = re.compile(r"\+(\d+)/")
_RE_E3 = re.compile(r"!(\d+)_")
_RE_F1 = re.compile(r"/F:(\d+)_")
_ABSENT = -50


@cache
def _openjtalk():
    try:
        import pyopenjtalk
    except ImportError as e:
        raise MissingLanguagePackage("Japanese", "ja", "pyopenjtalk-plus") from e
    return pyopenjtalk


def require() -> None:
    """Raise MissingLanguagePackage now if OpenJTalk is not installed."""
    _openjtalk()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def use_user_dictionary(csv_path: str | Path, compiled_dir: str | Path | None = None) -> Path:
    """Compile a MeCab user-dictionary CSV (once per content: an md5 file beside the compiled
    dictionary tells whether it is current) and load it into OpenJTalk. Returns the compiled file."""
    pyopenjtalk = _openjtalk()
    csv_path = Path(csv_path)
    out_dir = Path(compiled_dir) if compiled_dir is not None else csv_path.parent
    compiled, digest_file = out_dir / "user.dict", out_dir / "userdict.md5"
    digest = _md5(csv_path)
    if not compiled.exists() or not digest_file.exists() or digest_file.read_text(encoding="utf-8") != digest:
        out_dir.mkdir(parents=True, exist_ok=True)
        pyopenjtalk.mecab_dict_index(str(csv_path), str(compiled))
        digest_file.write_text(digest, encoding="utf-8")
    pyopenjtalk.update_global_jtalk_with_user_dict(str(compiled))
    return compiled


def normalize(text: str) -> str:
    """Upstream has no Japanese normalisation beyond collapsing repeated punctuation."""
    return RE_REPEATED_PUNCT.sub(r"\1", text)


def _field(pattern: re.Pattern, label: str) -> int:
    found = pattern.search(label)
    return int(found.group(1)) if found else _ABSENT


def prosody_phones(text: str) -> list[str]:
    """Phonemes with prosody marks for one run of Japanese characters, including the leading
    '^' and the final '$' / '?' (the caller strips them)."""
    pyopenjtalk = _openjtalk()
    labels = pyopenjtalk.make_label(pyopenjtalk.run_frontend(text))
    out: list[str] = []
    last = len(labels) - 1
    for n, label in enumerate(labels):
        phone = _RE_P3.search(label).group(1)
        if phone in "AEIOU":  # devoiced vowels read as plain ones
            phone = phone.lower()
        if phone == "sil":
            if n == 0:
                out.append("^")
            elif n == last:
                question = _field(_RE_E3, label)
                if question in (0, 1):
                    out.append("$" if question == 0 else "?")
            continue
        if phone == "pau":
            out.append("_")
            continue
        out.append(phone)
        a1, a2, a3 = _field(_RE_A1, label), _field(_RE_A2, label), _field(_RE_A3, label)
        moras = _field(_RE_F1, label)
        next_a2 = _field(_RE_A2, labels[n + 1])
        if a3 == 1 and next_a2 == 1 and phone in "aeiouAEIOUNcl":
            out.append("#")  # end of an accent phrase
        elif a1 == 0 and next_a2 == a2 + 1 and a2 != moras:
            out.append("]")  # pitch falls after this mora
        elif a2 == 1 and next_a2 == 2:
            out.append("[")  # pitch rises after the first mora
    return out


def _phones(text: str) -> list[str]:
    for symbol, reading in SYMBOL_READINGS:
        text = text.replace(symbol, reading)
    text = text.lower()
    words = RE_NOT_JA.split(text)
    marks = RE_NOT_JA.findall(text)
    phones: list[str] = []
    for i, word in enumerate(words):
        if RE_JA_START.match(word):
            phones += prosody_phones(word)[1:-1]
        if i < len(marks) and marks[i] != " ":
            phones.append(marks[i])
    return phones


def g2p(norm_text: str, version: str = "v2") -> tuple[list[str], None]:
    """Phones of normalised Japanese text (the same for every version); no word2ph, as upstream."""
    return [MARK_TO_PHONE.get(p, p) for p in _phones(norm_text)], None
