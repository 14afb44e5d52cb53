"""Data of upstream's Cantonese frontend, kept equal to it because it decides the phones.

Source: RVC-Boss/GPT-SoVITS, GPT_SoVITS/text/cantonese.py at commit
48b1a0169a28582a8984402f82cf438d3bfa6aca (MIT licence, (c) 2024 RVC-Boss): its `INITIALS`
list and its `rep_map` punctuation table, transcribed here in our own layout.
"""

from __future__ import annotations

# Jyutping syllable onsets, tried in this order: the first that prefixes the (toneless) syllable
# is its "initial" and the rest its final. The order is part of the data: vowel-led syllables
# ("aa", "aai", ..., "ung") are caught by these entries before the consonants, and "ng" precedes
# "n". The last four (silence names) can never match, as "s" comes first; kept for equality.
JYUTPING_ONSETS: tuple[str, ...] = tuple(
    """
    aa aai aak aap aat aau ai au ap at ak a
    p b e ts t dz d kw k gw g f h l m ng n s y w c z j
    ong on ou oi ok o uk ung
    sp spl spn sil
    """.split()
)

# Punctuation rewritten before everything outside CJK U+4E00-U+9FA5 and the phone set's marks
# is dropped. Matched as one alternation in this order ("..." is the only multi-character key).
PUNCTUATION_REWRITES: tuple[tuple[str, str], ...] = (
    ("：", ","),
    ("；", ","),
    ("，", ","),
    ("。", "."),
    ("！", "!"),
    ("？", "?"),
    ("\n", "."),
    ("·", ","),
    ("、", ","),
    ("...", "…"),
    ("$", "."),
    ("“", "'"),
    ("”", "'"),
    ('"', "'"),
    ("‘", "'"),
    ("’", "'"),
    ("（", "'"),
    ("）", "'"),
    ("(", "'"),
    (")", "'"),
    ("《", "'"),
    ("》", "'"),
    ("【", "'"),
    ("】", "'"),
    ("[", "'"),
    ("]", "'"),
    ("—", "-"),
    ("～", "-"),
    ("~", "-"),
    ("「", "'"),
    ("」", "'"),
)
