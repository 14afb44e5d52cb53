"""Cutting long input into synthesis-sized pieces.

* `cut0`..`cut5`: upstream's text-splitting methods (each returns the pieces joined by
  newlines, as upstream does, so they can be compared one to one).
* `prepare_sentences`: upstream `TextPreprocessor.pre_seg_text` — method, short-piece merging,
  closing punctuation, and re-splitting of pieces too long for BERT; a piece upstream cannot
  re-split (no punctuation) is cut at the best boundary there is (`split_to_length`).
* `StreamingSplitter`: for text that arrives in pieces (LLM tokens): releases a sentence as
  soon as its end is certain, holds back what may still continue, `flush()` ends the input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Characters after which upstream's `split` cuts a sentence.
SPLIT_MARKS = set("，。？！,.?!~:：—…")
# Characters a piece may consist of and still count as "only punctuation".
PUNCT_ONLY = set("!?…,.- ")
CUT5_MARKS = set(",.;?!、，。？！;：…")
MAX_BERT_CHARS = 510


def is_punctuation_only(text: str) -> bool:
    return set(text) <= PUNCT_ONLY


def split_after_marks(text: str) -> list[str]:
    """Upstream `split`: normalise double marks, make sure the text ends with one, cut after each."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SPLIT_MARKS:
        text += "。"
    pieces, start = [], 0
    for i, char in enumerate(text):
        if char in SPLIT_MARKS:
            pieces.append(text[start : i + 1])
            start = i + 1
    return pieces


def _join(pieces: list[str]) -> str:
    return "\n".join(p for p in pieces if not is_punctuation_only(p))


def cut0(text: str) -> str:
    """No split."""
    return text if not is_punctuation_only(text) else "\n"


def cut1(text: str) -> str:
    """Every four sentences; the last group (1-4 sentences) joins the one before it, as
    upstream's slicing does (so 8 sentences stay one piece)."""
    text = text.strip("\n")
    sentences = split_after_marks(text)
    bounds: list[int | None] = list(range(0, len(sentences), 4))
    if len(bounds) == 1:
        return _join([text])
    bounds[-1] = None
    return _join(["".join(sentences[a:b]) for a, b in zip(bounds, bounds[1:])])


def cut2(text: str, max_chars: int = 50) -> str:
    """Sentences merged until a piece exceeds 50 characters; a short tail joins the previous piece."""
    text = text.strip("\n")
    sentences = split_after_marks(text)
    if len(sentences) < 2:
        return text
    pieces, current = [], ""
    for sentence in sentences:
        current += sentence
        if len(current) > max_chars:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    if len(pieces) > 1 and len(pieces[-1]) < max_chars:
        tail = pieces.pop()
        pieces[-1] += tail
    return _join(pieces)


def cut3(text: str) -> str:
    """At every Chinese full stop 。"""
    text = text.strip("\n")
    return _join(text.strip("。").split("。"))


def cut4(text: str) -> str:
    """At every '.' that is not a decimal point."""
    text = text.strip("\n")
    return _join(re.split(r"(?<!\d)\.(?!\d)", text.strip(".")))


def cut5(text: str) -> str:
    """After every punctuation mark (decimal points excepted)."""
    text = text.strip("\n")
    pieces, current = [], ""
    for i, char in enumerate(text):
        current += char
        decimal_point = char == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        if char in CUT5_MARKS and not decimal_point:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return "\n".join(p for p in pieces if not set(p) <= CUT5_MARKS)


METHODS: dict[str, Callable[[str], str]] = {
    "cut0": cut0,
    "cut1": cut1,
    "cut2": cut2,
    "cut3": cut3,
    "cut4": cut4,
    "cut5": cut5,
}


def get_method(name: str) -> Callable[[str], str]:
    if name not in METHODS:
        raise ValueError(f"unknown text split method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def merge_short_pieces(pieces: list[str], threshold: int = 5) -> list[str]:
    """Concatenate consecutive pieces until each has at least `threshold` characters; a short
    tail is appended to the last piece."""
    if len(pieces) < 2:
        return pieces
    merged, current = [], ""
    for piece in pieces:
        current += piece
        if len(current) >= threshold:
            merged.append(current)
            current = ""
    if current:
        if merged:
            merged[-1] += current
        else:
            merged.append(current)
    return merged


def split_big_text(text: str, max_len: int = MAX_BERT_CHARS) -> list[str]:
    """Greedy split at punctuation so that no piece exceeds `max_len` characters (BERT limit)."""
    parts = re.split("([" + re.escape("".join(sorted(SPLIT_MARKS))) + "])", text)
    pieces, current = [], ""
    for part in parts:
        if len(current + part) > max_len:
            pieces.append(current)
            current = part
        else:
            current += part
    if current:
        pieces.append(current)
    return pieces


# ---------------------------------------------------------------- cutting where upstream cannot


def _is_token_char(c: str) -> bool:
    """Characters of a number or a Latin word (ASCII or fullwidth letters and digits)."""
    return (c.isascii() and c.isalnum()) or "０" <= c <= "９" or "Ａ" <= c <= "Ｚ" or "ａ" <= c <= "ｚ"


_TOKEN_JOINERS = set(".,:/'-")  # inside a token: 3.5, 1,000, 12:30, 1/2, don't, e-mail


def splits_token(text: str, k: int) -> bool:
    """Whether a cut before text[k] would break a number or a Latin word (or separate a combining
    mark from its base): the normaliser would then read "12345" as "12" + "345"."""
    a, b = text[k - 1], text[k]
    if unicodedata.category(b).startswith("M"):
        return True
    if _is_token_char(a) and _is_token_char(b):
        return True
    if a in _TOKEN_JOINERS and k >= 2 and _is_token_char(text[k - 2]) and _is_token_char(b):
        return True
    return b in _TOKEN_JOINERS and k + 1 < len(text) and _is_token_char(a) and _is_token_char(text[k + 1])


def _is_pause_mark(c: str) -> bool:
    # Any punctuation but an opening one: a cut after "“" or "(" would strand it.
    return unicodedata.category(c) in ("Pc", "Pd", "Pe", "Pf", "Po")


def _word_boundaries(text: str, lo: int, hi: int) -> list[int]:
    """Chinese word boundaries in text[lo:hi] by jieba, found with a little context either side."""
    from .jieba_seg import cut

    start = max(0, lo - 8)
    boundaries, at = [], start
    for word in cut(text[start : hi + 8]):
        at += len(word)
        if lo <= at <= hi:
            boundaries.append(at)
    return boundaries


def cut_point(text: str, start: int, limit: int, words: bool = True) -> int:
    """End of the next piece of text[start:], at most `limit` characters long and at least half
    that (so a long text becomes few pieces): after the last pause mark in that range, else after
    the last whitespace, else at the last Chinese word boundary (`words`: needs jieba), else at the
    last character boundary that keeps numbers and Latin words whole, else at `limit` itself."""
    hi = start + limit
    if hi >= len(text):
        return len(text)
    lo = start + max(1, limit // 2)
    for accept in (lambda k: _is_pause_mark(text[k - 1]), lambda k: text[k - 1].isspace()):
        for k in range(hi, lo - 1, -1):
            if accept(k) and not splits_token(text, k):
                return k
    if words and any("\u4e00" <= c <= "\u9fff" for c in text[lo:hi]):
        for k in reversed(_word_boundaries(text, lo, hi)):
            if not splits_token(text, k):
                return k
    for k in range(hi, lo - 1, -1):
        if not splits_token(text, k):
            return k
    return hi


def split_to_length(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut where `cut_point` finds best; the pieces
    join back to `text`."""
    pieces, start = [], 0
    while start < len(text):
        end = cut_point(text, start, limit)
        pieces.append(text[start:end])
        start = end
    return pieces


def split_long_piece(piece: str, max_len: int = MAX_BERT_CHARS) -> list[str]:
    """A piece over `max_len` characters: upstream's `split_big_text` at punctuation, then what it
    leaves too long (unpunctuated text) by `split_to_length`. Also drops upstream's artefacts:
    an empty first piece (when the first part alone is over the limit) and a lone closing mark
    (the 。 appended to an unpunctuated piece), which would each be a segment with nothing to say."""
    pieces: list[str] = []
    for part in split_big_text(piece, max_len):
        if not part:
            continue
        if pieces and not any(c.isalnum() for c in part):
            pieces[-1] += part  # a few marks: they end the previous piece (re-cut below if too long)
        else:
            pieces.append(part)
    out = []
    for part in pieces:
        out.extend(split_to_length(part, max_len) if len(part) > max_len else [part])
    return out


def first_clause(text: str) -> str:
    return re.split("[" + re.escape("".join(sorted(SPLIT_MARKS))) + "]", text)[0].strip()


def sentence_end_for(language: str) -> str:
    return "." if language == "en" else "。"


RE_REPEATED_PUNCT = re.compile(r"([!?…,.\-])([!?…,.\-])+")


def prepare_sentences(text: str, language: str = "zh", method: str = "cut1") -> list[str]:
    """Upstream `TextPreprocessor.preprocess`'s text part (`pre_seg_text`)."""
    text = RE_REPEATED_PUNCT.sub(r"\1", text).strip("\n")
    if not text:
        return []
    end = sentence_end_for(language)
    if text[0] not in SPLIT_MARKS and len(first_clause(text)) < 4:
        text = end + text  # a very short first clause is read badly without a lead-in
    text = get_method(method)(text)
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    pieces = [p for p in text.split("\n") if p not in ("", " ")]
    sentences = []
    for piece in merge_short_pieces(pieces, 5):
        if not piece.strip() or not re.sub(r"\W+", "", piece):
            continue
        if piece[-1] not in SPLIT_MARKS:
            piece += end
        sentences.extend(split_long_piece(piece) if len(piece) > MAX_BERT_CHARS else [piece])
    return sentences


# ---------------------------------------------------------------- streaming

# Marks that end a sentence for streaming, and softer ones used when a sentence runs long.
STRONG_ENDS = set("。！？!?；;…\n")
SOFT_ENDS = set("，,、：:")
CLOSERS = set("”’\"')）」』】》")
_MARK_RUN = STRONG_ENDS | {"."}
# Words whose trailing '.' does not end a sentence.
ABBREVIATIONS = frozenset("mr mrs ms dr prof st sr jr vs etc e.g i.e no fig approx".split())
# Longer than any abbreviation: the word before a '.' is looked for in this many characters only.
_ABBREVIATION_WINDOW = 16


class StreamingSplitter:
    """Accumulates streamed text and releases sentence-sized segments.

    A segment ends at 。！？!?;…, a newline, or an English '.' followed by whitespace; closing
    quotes/brackets stay with it. A mark at the very end of the buffer is held until the next
    character shows it is final (a '.' may be a decimal point or an abbreviation, '…'/'!'
    may repeat). Segments shorter than `min_chars` are held and joined to the next one; when
    the pending text exceeds `max_chars` without a sentence end it is cut at the last comma, or
    failing that at the last space or character boundary that keeps numbers and Latin words whole.
    So pending text never outgrows `max_chars` (plus one slice of a delta), and the work per
    character stays bounded however long the text runs without punctuation.
    """

    def __init__(self, min_chars: int = 5, max_chars: int = 80):
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.buffer = ""

    def push(self, text: str) -> list[str]:
        # A long delta is taken in slices, so each scan of the buffer below is over a bounded text.
        out: list[str] = []
        step = max(self.max_chars, 256)
        for i in range(0, len(text), step):
            self.buffer += text[i : i + step]
            out += self._release()
        return out

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest and not is_punctuation_only(rest) else []

    def _release(self) -> list[str]:
        out = []
        while (cut := self._next_cut()) is not None:
            segment, self.buffer = self.buffer[:cut].strip(), self.buffer[cut:]
            if segment and not is_punctuation_only(segment):
                out.append(segment)
        return out

    def _next_cut(self) -> int | None:
        start = 0
        while (end := self._sentence_end(start)) is not None:
            if len(self.buffer[:end].strip()) >= self.min_chars:
                return end
            start = end  # too short: keep it and look for the next end
        if len(self.buffer) > self.max_chars:
            return self._soft_cut()
        return None

    def _sentence_end(self, start: int) -> int | None:
        """Index just past the first certain sentence end at or after `start`."""
        text = self.buffer
        for i in range(start, len(text)):
            char = text[i]
            if char == "." and self._is_final_period(i):
                return self._past_closers(i + 1)
            if char in STRONG_ENDS:
                j = i + 1
                while j < len(text) and text[j] in _MARK_RUN:
                    j += 1  # "?!", "……", "..." stay together
                if j == len(text):
                    return None  # more marks may follow
                return self._past_closers(j)
        return None

    def _is_final_period(self, i: int) -> bool:
        text = self.buffer
        if i + 1 >= len(text):
            return False  # "3." may become "3.5", "Dr." may be an abbreviation
        nxt = text[i + 1]
        word = re.findall(r"[A-Za-z.]+$", text[max(0, i - _ABBREVIATION_WINDOW) : i])
        if word and word[0].lower() in ABBREVIATIONS:
            return False
        return nxt.isspace() or nxt in CLOSERS or not nxt.isascii()

    def _past_closers(self, j: int) -> int | None:
        text = self.buffer
        while j < len(text) and text[j] in CLOSERS:
            j += 1
        return j

    def _soft_cut(self) -> int:
        window = self.buffer[: self.max_chars]
        positions = [i for i, c in enumerate(window) if c in SOFT_ENDS]
        if positions:
            return positions[-1] + 1
        # No jieba here (the operator would load its dictionary for this alone); the frontend
        # cuts what it receives again where it must.
        return cut_point(self.buffer, 0, self.max_chars, words=False)
