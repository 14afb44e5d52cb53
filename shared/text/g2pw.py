"""Optional g2pW polyphone disambiguation for the v2 Chinese frontend.

g2pW is a BERT-based classifier exported to ONNX that picks the reading of polyphonic
characters (行 háng/xíng) from sentence context. Upstream v2 uses it by default; here it is
used only when configured, otherwise pypinyin's phrase-based readings are used (which is
what the parity fixtures were produced with).

Configuration (environment):
  GSV_G2PW_DIR        directory of the g2pW model as released (G2PWModel_1.1): g2pW.onnx,
                      POLYPHONIC_CHARS.txt, MONOPHONIC_CHARS.txt,
                      bopomofo_to_pinyin_wo_tune_dict.json, optionally config.py and
                      polyphonic.rep (word/char pronunciation overrides, upstream's format
                      `word: ['py1', 'py2']`).
  GSV_G2PW_TOKENIZER  tokenizer directory (default: GSV_BERT_DIR, the chinese-roberta
                      directory, which is what upstream uses).
The mode in use is logged once. A configured but incomplete directory raises.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
from pypinyin import Style, pinyin

from .chinese_normalize import to_simplified

log = logging.getLogger(__name__)

ENV_DIR, ENV_TOKENIZER, ENV_BERT = "GSV_G2PW_DIR", "GSV_G2PW_TOKENIZER", "GSV_BERT_DIR"
REQUIRED_FILES = ("POLYPHONIC_CHARS.txt", "MONOPHONIC_CHARS.txt", "bopomofo_to_pinyin_wo_tune_dict.json")
MODEL_FILES = ("g2pW.onnx", "g2pw.onnx")
# Characters whose dictionary reading (plus tone sandhi) beats the model, and monophonic
# entries that are in fact ambiguous: excluded as upstream does.
NOT_QUERIED = set("一不和咋嗲剖差攢倒難奔勁拗肖瘙誒泊听噢")
NOT_MONOPHONIC = set("似攢")
CONTEXT_CHARS = 16  # characters of context on each side of the queried span
MAX_TOKENS = 512


class G2pwConfigError(FileNotFoundError):
    """GSV_G2PW_DIR is set but the directory or its files are missing."""


def _read_pairs(path: str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.split("\t")[:2]) for line in handle.read().strip().split("\n") if "\t" in line]


def _config_flags(model_dir: str) -> dict:
    """use_mask / use_char_phoneme from the model's config.py, read as literals (not executed)."""
    flags = {"use_mask": True, "use_char_phoneme": False}
    path = os.path.join(model_dir, "config.py")
    if os.path.exists(path):
        for node in ast.parse(open(path, encoding="utf-8").read()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in flags:
                    flags[node.targets[0].id] = ast.literal_eval(node.value)
    return flags


def read_overrides(path: str) -> dict[str, list[str]]:
    """`word: ['py1', 'py2']` lines → {word: pinyins}."""
    table: dict[str, list[str]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if ":" in line:
                    key, value = line.split(":", 1)
                    table[key.strip()] = list(ast.literal_eval(value.strip()))
    return table


def tokenize_with_offsets(tokenizer, text: str) -> tuple[list[str], list[int | None]]:
    """Tokens of `text` (ASCII runs as words, everything else per character) and, for every
    character, the index of the token covering it."""
    tokens: list[str] = []
    char_token: list[int | None] = [None] * len(text)
    for m in re.finditer(r" +|[a-zA-Z0-9]+|.", text, re.S):
        if m.group().startswith(" "):
            continue
        pieces = tokenizer.tokenize(m.group())
        if not pieces or pieces == ["[UNK]"]:
            pieces = ["[UNK]"]
            spans = [(m.start(), m.end())]
        else:
            spans, pos = [], m.start()
            for piece in pieces:
                width = len(piece[2:] if piece.startswith("##") else piece)
                spans.append((pos, pos + width))
                pos += width
        for piece, (start, end) in zip(pieces, spans):
            for i in range(start, min(end, len(text))):
                char_token[i] = len(tokens)
            tokens.append(piece)
    return tokens, char_token


@dataclass
class Query:
    sentence: int
    char: int  # index in the sentence
    window: str
    window_char: int  # index in the window


class G2pw:
    def __init__(self, model_dir: str, tokenizer_dir: str):
        import onnxruntime
        from transformers import AutoTokenizer

        self.flags = _config_flags(model_dir)
        polyphonic = _read_pairs(os.path.join(model_dir, "POLYPHONIC_CHARS.txt"))
        # Labels are readings (or "char reading" pairs), sorted; each character may only take
        # the labels listed for it.
        label_text = (lambda c, p: f"{c} {p}") if self.flags["use_char_phoneme"] else (lambda c, p: p)
        self.labels = sorted({label_text(c, p) for c, p in polyphonic})
        index = {label: i for i, label in enumerate(self.labels)}
        pairs = [(c, index[label_text(c, p)]) for c, p in polyphonic]
        self.char_labels: dict[str, list[int]] = {}
        for char, label in pairs:
            self.char_labels.setdefault(char, []).append(label)
        self.char_ids = {c: i for i, c in enumerate(sorted(self.char_labels))}
        self.queried = set(self.char_labels) - NOT_QUERIED
        self.monophonic = {
            c: p for c, p in _read_pairs(os.path.join(model_dir, "MONOPHONIC_CHARS.txt")) if c not in NOT_MONOPHONIC
        }
        with open(os.path.join(model_dir, "bopomofo_to_pinyin_wo_tune_dict.json"), encoding="utf-8") as handle:
            self.bopomofo_to_pinyin = json.load(handle)
        self.overrides = read_overrides(os.path.join(model_dir, "polyphonic.rep"))
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.to_traditional = _traditional_converter()
        onnx_path = next(os.path.join(model_dir, f) for f in MODEL_FILES if os.path.exists(os.path.join(model_dir, f)))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def bopomofo_pinyin(self, bopomofo: str) -> str | None:
        if self.flags["use_char_phoneme"]:
            bopomofo = bopomofo.split(" ", 1)[1]
        base = self.bopomofo_to_pinyin.get(bopomofo[:-1])
        return base + bopomofo[-1] if base and bopomofo[-1] in "12345" else None

    def predict(self, sentences: list[str]) -> list[list[str]]:
        """Tone-3 pinyin (neutral tone 5) for every character of every sentence; characters
        without a reading (punctuation) are returned as they are."""
        results, queries = [], []
        for s, sentence in enumerate(sentences):
            fallback = [p[0] for p in pinyin(to_simplified(sentence), neutral_tone_with_five=True, style=Style.TONE3)]
            if len(fallback) != len(sentence):  # non-Chinese runs come back merged: per character instead
                fallback = [pinyin(c, neutral_tone_with_five=True, style=Style.TONE3)[0][0] for c in sentence]
            traditional = self.to_traditional(sentence)
            row = list(fallback)
            positions = [i for i, c in enumerate(traditional) if c in self.queried]
            for i, char in enumerate(traditional):
                if char not in self.queried and char in self.monophonic:
                    row[i] = self.bopomofo_pinyin(self.monophonic[char]) or row[i]
            if positions:
                left = max(0, positions[0] - CONTEXT_CHARS)
                right = min(len(traditional), positions[-1] + CONTEXT_CHARS + 1)
                window = traditional[left:right].lower()
                queries += [Query(s, i, window, i - left) for i in positions]
            results.append(row)
        for query, label in zip(queries, self._classify(queries)):
            reading = self.bopomofo_pinyin(self.labels[label])
            if reading:
                results[query.sentence][query.char] = reading
        return results

    def _classify(self, queries: list[Query]) -> list[int]:
        if not queries:
            return []
        rows = [self._model_row(q) for q in queries]
        width = max(len(r["ids"]) for r in rows)

        def pad(seq: list[int]) -> list[int]:
            return seq + [0] * (width - len(seq))

        feeds = {
            "input_ids": np.array([pad(r["ids"]) for r in rows], np.int64),
            "token_type_ids": np.zeros((len(rows), width), np.int64),
            "attention_mask": np.array([pad([1] * len(r["ids"])) for r in rows], np.int64),
            "phoneme_mask": np.array([r["mask"] for r in rows], np.float32),
            "char_ids": np.array([r["char_id"] for r in rows], np.int64),
            "position_ids": np.array([r["position"] for r in rows], np.int64),
        }
        names = {i.name for i in self.session.get_inputs()}
        probs = self.session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        return np.argmax(probs, axis=1).tolist()

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one G2PW per process, the cache lives as long as it
    def _tokens(self, window: str):
        tokens, char_token = tokenize_with_offsets(self.tokenizer, window)
        return tokens, char_token

    def _model_row(self, query: Query) -> dict:
        tokens, char_token = self._tokens(query.window)
        position = char_token[query.window_char]
        if len(tokens) > MAX_TOKENS - 2:  # keep a token window centred on the query
            start = max(0, min(position - (MAX_TOKENS - 2) // 2, len(tokens) - (MAX_TOKENS - 2)))
            tokens, position = tokens[start : start + MAX_TOKENS - 2], position - start
        ids = self.tokenizer.convert_tokens_to_ids(["[CLS]"] + tokens + ["[SEP]"])
        char = query.window[query.window_char]
        allowed = self.char_labels[char]
        mask = (
            [1.0 if i in allowed else 0.0 for i in range(len(self.labels))]
            if self.flags["use_mask"]
            else [1.0] * len(self.labels)
        )
        return {"ids": list(ids), "mask": mask, "char_id": self.char_ids[char], "position": position + 1}

    def correct(self, word: str, pinyins: list[str]) -> list[str]:
        """Word-level override if listed, else per-character overrides."""
        if word in self.overrides:
            return list(self.overrides[word])
        return [self.overrides[c][0] if c in self.overrides else p for c, p in zip(word, pinyins)]


def _traditional_converter():
    # g2pW was trained on traditional characters; the conversion must keep the length.
    try:
        from opencc import OpenCC

        cc = OpenCC("s2tw")
    except Exception:
        return lambda text: text

    def convert(text: str) -> str:
        out = cc.convert(text)
        return out if len(out) == len(text) else text

    return convert


def configured_dir() -> str | None:
    return os.environ.get(ENV_DIR) or None


def check_model_dir(model_dir: str) -> None:
    if not os.path.isdir(model_dir):
        raise G2pwConfigError(f"{ENV_DIR}={model_dir} is not a directory")
    present = set(os.listdir(model_dir))
    missing = [f for f in REQUIRED_FILES if f not in present]
    if not present.intersection(MODEL_FILES):
        missing.append(" or ".join(MODEL_FILES))
    if missing:
        raise G2pwConfigError(f"g2pW directory {model_dir} lacks: {', '.join(missing)}")


@functools.lru_cache(maxsize=4)
def _load(model_dir: str | None, tokenizer_dir: str | None) -> G2pw | None:
    if model_dir is None:
        log.info("Chinese polyphones: pypinyin (g2pW not configured; set %s to enable)", ENV_DIR)
        return None
    check_model_dir(model_dir)
    if not tokenizer_dir:
        raise G2pwConfigError(f"g2pW needs a tokenizer directory: set {ENV_TOKENIZER} or {ENV_BERT}")
    log.info("Chinese polyphones: g2pW from %s", model_dir)
    return G2pw(model_dir, tokenizer_dir)


def active_model() -> G2pw | None:
    """The configured g2pW model (loaded once), or None for the pypinyin path."""
    tokenizer_dir = os.environ.get(ENV_TOKENIZER) or os.environ.get(ENV_BERT)
    return _load(configured_dir(), tokenizer_dir)


def predict_sentence(sentence: str) -> list[str] | None:
    model = active_model()
    return None if model is None else model.predict([sentence])[0]


def correct_word(word: str, pinyins: list[str]) -> list[str]:
    model = active_model()
    return pinyins if model is None else model.correct(word, pinyins)
