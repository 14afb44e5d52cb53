"""Text → synthesis segments that every model can take.

A segment is one BERT call and one GPT decode, so it must fit both:

* **BERT positions.** chinese-roberta has 512 positions; a Chinese run's normalised text is one
  token per character plus [CLS] and [SEP], so at most `MAX_BERT_CHARS` = 510 characters (upstream
  re-splits pieces over 510 characters, but only at punctuation: longer unpunctuated text crashed
  the model).
* **The GPT's decode budget.** The GPT stops after 1500 steps (`gpt.generate.MAX_STEPS`; the
  checkpoint's `max_sec` = 54 gives an early stop of 50 * 54 = 2700, which never comes first):
  60 s of audio at 25 tokens/s. Speech at a normal pace takes 2.5-3 tokens per phone (Mandarin:
  4-5 syllables/s of 2 phones each, 8-10 phones/s; English 12-14 phones/s), so
  `MAX_SEGMENT_PHONES` = 400 phones need at most ~1200 steps: the segment ends by itself with a
  margin for slower voices, instead of being cut off mid-word at 60 s. 400 target phones plus the
  prompt of a 10 s reference (~100 phones) also stay within the 512 phones of a GPT segment that
  the TensorRT profiles allow (`backends.tensorrt.MAX_TEXT`).

Upstream's cutting (`sentence_split.prepare_sentences`) runs first and decides every segment of
normal text, exactly as upstream. Only a piece that still breaks a limit after conversion is cut
again (`split_to_length`: punctuation, whitespace, Chinese word, character boundary keeping
numbers whole), into parts sized by how far over the limit it was. Pieces reaching the normaliser
are at most 510 raw characters, so the per-piece work is bounded and a text's conversion time
grows linearly with its length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import FrontendError
from .frontend import PhoneSegment, text_to_phones
from .language import check_language
from .sentence_split import MAX_BERT_CHARS, SPLIT_MARKS, prepare_sentences, sentence_end_for, split_to_length

log = logging.getLogger(__name__)

BERT_POSITIONS = 512
assert MAX_BERT_CHARS == BERT_POSITIONS - 2  # [CLS] + text + [SEP]
MAX_SEGMENT_PHONES = 400
# A re-cut aims this far below the limit: the parts' phones are estimated from the whole piece's
# (phones per character vary along a text), and a part that still overflows costs a conversion.
_SAFETY = 0.85


@dataclass
class TextSegment:
    """One segment of an utterance: converted runs, or the reason it could not be converted."""

    text: str  # the raw text it was made from
    runs: list[PhoneSegment] = field(default_factory=list)
    final: bool = False  # the utterance's last segment
    error: str | None = None

    @property
    def n_phones(self) -> int:
        return sum(len(r) for r in self.runs)


def overflow(
    runs: list[PhoneSegment], max_phones: int = MAX_SEGMENT_PHONES, max_bert_chars: int = MAX_BERT_CHARS
) -> float:
    """How many times over its tightest limit a converted segment is (<= 1: it fits)."""
    phones = sum(len(r) for r in runs) / max_phones
    bert = max((len(r.norm_text) for r in runs if r.language == "zh"), default=0) / max_bert_chars
    return max(phones, bert)


def _ended(piece: str, language: str) -> str:
    # Upstream ends every segment with a mark (a segment without one tends to trail off).
    return piece if piece[-1] in SPLIT_MARKS else piece + sentence_end_for(language)


def _estimated_phones(piece: str) -> int:
    # A Han character is one syllable, two phones; so is a digit read out (a few give fewer:
    # 儿 after a syllable, zeros inside a quantity). Latin text is left out: it converts fast.
    return 2 * sum(1 for c in piece if "\u4e00" <= c <= "\u9fff" or c.isdigit())


# A piece estimated this far over the phone budget is cut before it is converted: converting it
# whole would be work thrown away (half of all for unpunctuated Chinese).
_CLEARLY_OVER = 1.25


def fit_piece(
    piece: str,
    language: str,
    version: str = "v2",
    max_phones: int = MAX_SEGMENT_PHONES,
    max_bert_chars: int = MAX_BERT_CHARS,
) -> list[tuple[str, list[PhoneSegment]]]:
    """(text, runs) of `piece`, re-cut until every part fits the limits. Parts with nothing to
    speak are skipped; FrontendError only if no part of the piece can be spoken."""
    estimate = _estimated_phones(piece) / max_phones
    if estimate > _CLEARLY_OVER and len(piece) > 1:
        return _fit_parts(piece, estimate, language, version, max_phones, max_bert_chars)
    runs = text_to_phones(piece, language, version)
    over = overflow(runs, max_phones, max_bert_chars)
    if over <= 1 or len(piece) <= 1:
        return [(piece, runs)]
    return _fit_parts(piece, over, language, version, max_phones, max_bert_chars)


def _fit_parts(
    piece: str, over: float, language: str, version: str, max_phones: int, max_bert_chars: int
) -> list[tuple[str, list[PhoneSegment]]]:
    """`piece`, `over` times too long, cut into parts sized to fit, each fitted in turn."""
    limit = max(1, min(len(piece) - 1, math.floor(len(piece) * _SAFETY / over)))
    fitted: list[tuple[str, list[PhoneSegment]]] = []
    error: FrontendError | None = None
    for part in split_to_length(piece, limit):
        if not part.strip():
            continue
        try:
            fitted += fit_piece(_ended(part, language), language, version, max_phones, max_bert_chars)
        except FrontendError as e:
            error = e  # e.g. a part of only symbols; the rest is still spoken
    if not fitted:
        raise error or FrontendError(f"nothing to speak in {piece[:40]!r}")
    return fitted


def segment_text(
    text: str, language: str = "zh", version: str = "v2", method: str = "cut5", max_phones: int = MAX_SEGMENT_PHONES
) -> Iterator[TextSegment]:
    """A whole text as synthesis segments, converted one at a time as they are asked for (so a
    long text is never held as phones). Every segment fits `max_phones` and BERT's positions.
    Failures are segments with `error`: text with nothing to speak, an unsupported language, a
    piece that cannot be converted (the caller decides whether a non-final one matters)."""
    try:
        check_language(language)
        pieces = prepare_sentences(text, language, method)
    except FrontendError as e:
        yield TextSegment(text, final=True, error=str(e))
        return
    if not pieces:
        yield TextSegment(text, final=True, error=f"nothing to speak in {text[:40]!r}")
        return
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        try:
            parts = fit_piece(piece, language, version, max_phones)
        except FrontendError as e:
            yield TextSegment(piece, final=last, error=str(e))
            continue
        for j, (part, runs) in enumerate(parts):
            yield TextSegment(part, runs, final=last and j == len(parts) - 1)
