"""Part-of-speech tags for English tokens, used only to choose between the two readings of a
homograph (to record / a record).

Upstream tags with NLTK's averaged-perceptron tagger. Its model is NLTK *data*, which is not
a PyPI package and must not be downloaded at run time, so:
  * if the tagger data is already installed (found via `nltk.data.find`, nothing is
    downloaded), it is used and results match upstream;
  * otherwise a small context-rule tagger decides verb vs noun/adjective from the
    neighbouring words (after "to"/modals/pronouns: verb; after determiners and
    prepositions: noun; after have/be: past participle). Non-homograph tokens get "NN"
    there, which is harmless because tags are consulted only for homographs.
The mode in use is logged once.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

TAGGER_RESOURCES = ("taggers/averaged_perceptron_tagger_eng/", "taggers/averaged_perceptron_tagger/")

VERB_CUES = frozenset(
    "to will would shall should can could may might must do does did don't doesn't didn't "
    "won't wouldn't can't cannot couldn't shouldn't let's please not never always often "
    "usually also just i you we they".split()
)
THIRD_PERSON = frozenset("he she it".split())
PARTICIPLE_CUES = frozenset("have has had having was were is are am be been being get gets got".split())
NOUN_CUES = frozenset(
    "a an the this that these those my your his her its our their some any no every each "
    "of for in on at with by from about".split()
)


@functools.lru_cache(maxsize=1)
def nltk_tagger_available() -> bool:
    try:
        import nltk
    except ImportError:
        return False
    for resource in TAGGER_RESOURCES:
        try:
            nltk.data.find(resource)
            return True
        except LookupError:
            continue
    return False


@functools.lru_cache(maxsize=1)
def _log_mode() -> None:
    if nltk_tagger_available():
        log.info("English homographs: NLTK averaged-perceptron tagger (installed data)")
    else:
        log.info("English homographs: NLTK tagger data not installed; using context rules")


def context_tag(tokens: list[str], i: int) -> str:
    """Penn-style tag guessed from the previous (and for adjectives the next) token."""
    prev = tokens[i - 1].lower() if i > 0 else ""
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if prev in THIRD_PERSON:
        return "VBD"  # "he read": present would be "reads"
    if prev in VERB_CUES:
        return "VB"
    if prev in PARTICIPLE_CUES:
        return "VBN"
    if prev in NOUN_CUES:
        return "JJ" if nxt[:1].isalpha() else "NN"
    return "JJ" if nxt[:1].isalpha() else "NN"


def pos_tags(tokens: list[str], needs_tag=lambda token: True) -> list[str]:
    """One tag per token; `needs_tag` limits the rule tagger to the tokens that matter."""
    _log_mode()
    if not tokens:
        return []
    if nltk_tagger_available():
        import nltk

        return [tag for _, tag in nltk.pos_tag(tokens)]
    return [context_tag(tokens, i) if needs_tag(t) else "NN" for i, t in enumerate(tokens)]
