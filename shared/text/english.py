"""English G2P: normalised text → ARPAbet phones (upstream `text/english.py` behaviour).

Tokens come from NLTK's TweetTokenizer (pure code, no NLTK data). Each word is looked up:
homograph table (by POS tag) → CMU dictionary → spelled out if at most three letters →
possessive 's → split into known words with `wordsegment` → g2p_en's neural predictor.
"""

from __future__ import annotations

import functools
import re

from .english_dict import cmu_dictionary, homographs
from .english_normalize import normalize_english
from .english_oov import neural_g2p
from .english_pos import pos_tags
from .symbols import UNK, symbols_v2

RE_HAS_LETTER = re.compile("[a-z]")
RE_POSSESSIVE = re.compile(r"^([a-z]+)('s)$")
# Phones the predictor may emit that are not phones (padding/markers, the stressless UW).
DROPPED_PHONES = {" ", "<pad>", "UW", "</s>", "<s>"}
VOICELESS_ENDINGS = {"P", "T", "K", "F", "TH", "HH"}
SIBILANT_ENDINGS = {"S", "Z", "SH", "ZH", "CH", "JH"}


def text_normalize(text: str) -> str:
    return normalize_english(text)


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from nltk.tokenize import TweetTokenizer

    return TweetTokenizer().tokenize


@functools.lru_cache(maxsize=1)
def _word_segmenter():
    import wordsegment

    wordsegment.load()  # unigram/bigram counts shipped inside the package
    return wordsegment.segment


def spell_letters(word: str) -> list[str]:
    cmu = cmu_dictionary()
    phones: list[str] = []
    for letter in word:
        if letter == "a":
            phones.append("EY1")  # the letter, not the article
        elif not letter.isalpha():
            phones.append(letter)
        else:
            phones += cmu.get(letter, [])  # letters outside a-z have no reading
    return phones


def possessive(stem_phones: list[str]) -> list[str]:
    last = stem_phones[-1] if stem_phones else ""
    if last in VOICELESS_ENDINGS:
        return stem_phones + ["S"]
    if last in SIBILANT_ENDINGS:
        return stem_phones + ["AH0", "Z"]
    return stem_phones + ["Z"]


def lookup_word(word: str) -> list[str]:
    """Upstream `qryword`: dictionary, then the out-of-vocabulary fallbacks."""
    word = word.lower()
    cmu = cmu_dictionary()
    if len(word) > 1 and word in cmu:
        return list(cmu[word])
    if len(word) <= 3:
        return spell_letters(word)
    if RE_POSSESSIVE.match(word):
        return possessive(lookup_word(word[:-2]))
    parts = _word_segmenter()(word)
    if len(parts) == 1:
        return neural_g2p().predict(word)
    return [phone for part in parts for phone in lookup_word(part)]


def homograph_reading(word: str, tag: str) -> list[str]:
    reading, other, reading_tag = homographs()[word]
    if tag.startswith(reading_tag) or (len(tag) < len(reading_tag) and reading_tag.startswith(tag)):
        return list(reading)
    return list(other)


def token_phones(token: str, tag: str) -> list[str]:
    word = token.lower()
    if RE_HAS_LETTER.search(word) is None:
        return [word]  # punctuation
    if len(word) == 1:
        return ["EY1"] if token == "A" else list(cmu_dictionary()[word])
    if word in homographs():
        return homograph_reading(word, tag)
    return lookup_word(token)


def words_to_phones(text: str) -> list[str]:
    """Phones of every token, with " " between tokens (as g2p_en's G2p.__call__)."""
    tokens = _tokenizer()(text)
    tags = pos_tags(tokens, needs_tag=lambda t: t.lower() in homographs())
    out: list[str] = []
    for token, tag in zip(tokens, tags):
        out += token_phones(token, tag) + [" "]
    return out[:-1]


def g2p(norm_text: str) -> list[str]:
    """Phones in the symbol set; "'" becomes "-", <unk> becomes UNK, anything else unknown is dropped."""
    known = set(symbols_v2())
    phones = []
    for ph in words_to_phones(norm_text):
        if ph in DROPPED_PHONES:
            continue
        ph = UNK if ph == "<unk>" else ("-" if ph == "'" else ph)
        if ph in known:
            phones.append(ph)
    return phones
