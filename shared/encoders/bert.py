"""Per-phone BERT features for Chinese text (chinese-roberta-wwm-ext-large).

Upstream feeds the *normalised* Chinese text of a segment through the masked-LM model with
`output_hidden_states=True`, takes the third-from-last hidden state (output of layer 22 of
24), drops the [CLS]/[SEP] rows and repeats each character's row `word2ph[i]` times, giving
`[1024, n_phones]`. Non-Chinese segments get zeros of that shape.

Only the hidden states are needed, so the encoder runs without the masked-LM head.
The model is loaded from a local Hugging Face directory only, never from the hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch

FEATURE_DIM = 1024
HIDDEN_STATE_INDEX = -3  # third from last: upstream's choice of layer
# The model has 512 positions: [CLS] + at most 510 characters + [SEP]. The frontend keeps every
# Chinese run within this (text.segment_limits); a longer run (another producer, an older frontend)
# is encoded in windows of this size instead of crashing the node with every request in flight.
MAX_CHARS = 510
WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class BertModelFiles(FileNotFoundError):
    """The BERT directory or some of its files are missing."""


class Bert(NamedTuple):
    model: torch.nn.Module  # transformers BertForMaskedLM (eval mode)
    tokenizer: object  # transformers tokenizer of the same directory


def missing_files(directory: str | os.PathLike) -> list[str]:
    """Names of required files absent from a BERT directory (alternatives joined by ' or ')."""
    present = set(os.listdir(directory))
    missing = [] if "config.json" in present else ["config.json"]
    for group in (WEIGHT_FILES, TOKENIZER_FILES):
        if not present.intersection(group):
            missing.append(" or ".join(group))
    return missing


PACKED_FOR_ROWS = 32  # a segment's characters: what oneDNN lays the encoder's weights out for


def load_bert(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pack_products: bool | None = False,
) -> Bert:
    """Load chinese-roberta-wwm-ext-large (or a same-format dev model) from a local directory.

    ``pack_products``: the encoder's float32 CPU products on oneDNN-prepacked weights
    (onednn_linear.pack_linears; ~1e-6 from MKL's, the same features to float32 rounding) —
    ``None``: where that is faster (cpu_features.mkl_float32_is_slow: AMD CPUs, 2.5-2.9x per
    product at a segment's few rows). Such a model runs but no longer exports or traces."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise BertModelFiles(f"BERT model directory not found: {directory}")
    missing = missing_files(directory)
    if missing:
        raise BertModelFiles(f"BERT model directory {directory} lacks: {', '.join(missing)}")
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from .hf_checks import check_config, check_finite_weights, check_weight_files

    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    check_config(config, directory)  # before transformers builds the network from it
    check_weight_files(directory, WEIGHT_FILES)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(directory, config=config, local_files_only=True)
    check_finite_weights(model, directory)
    if model.config.hidden_size != FEATURE_DIM:
        raise ValueError(f"BERT hidden size is {model.config.hidden_size}; the GPT expects {FEATURE_DIM}")
    model = model.to(device=device, dtype=dtype).eval()
    on_cpu_float32 = model.device.type == "cpu" and dtype == torch.float32
    if pack_products is None:
        from ..cpu_features import mkl_float32_is_slow

        pack_products = on_cpu_float32 and mkl_float32_is_slow()
    if pack_products:
        if not on_cpu_float32:
            raise ValueError(f"prepacked BERT products are for a float32 CPU model, not {dtype} on {model.device}")
        from ..onednn_linear import pack_linears

        with torch.no_grad():
            pack_linears(_encoder(model).encoder, PACKED_FOR_ROWS)
    return Bert(model, tokenizer)


def packed_products(model: object) -> bool:
    """Whether ``model``'s encoder runs on prepacked products (``load_bert(pack_products=...)``)."""
    from ..onednn_linear import PackedLinearModule

    return isinstance(model, torch.nn.Module) and any(isinstance(m, PackedLinearModule) for m in model.modules())


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "bert", model)  # skip the masked-LM head: only hidden states are used


def _model_device(model: torch.nn.Module) -> torch.device:
    return model.device  # HF models and the exported-graph runners (backends.encoder_runtime) both have it


def selected_hidden(model, inputs) -> torch.Tensor:
    """The hidden state upstream uses, ``[B, tokens, 1024]``; an exported graph computes only that."""
    if hasattr(model, "selected_hidden"):
        return model.selected_hidden(inputs)
    return _encoder(model)(**inputs, output_hidden_states=True).hidden_states[HIDDEN_STATE_INDEX]


def _check_alignment(norm_text: str, word2ph: Sequence[int], n_tokens: int) -> None:
    if len(word2ph) != len(norm_text):
        raise ValueError(f"word2ph has {len(word2ph)} entries for {len(norm_text)} characters")
    if n_tokens != len(norm_text):
        raise ValueError(f"tokenizer split {norm_text!r} into {n_tokens} tokens, expected one per character")


def expand_to_phones(char_features: torch.Tensor, word2ph: Sequence[int]) -> torch.Tensor:
    """[n_chars, D] character rows → [D, n_phones], row i repeated word2ph[i] times."""
    repeats = torch.as_tensor(list(word2ph), device=char_features.device)
    return char_features.repeat_interleave(repeats, dim=0).T


def _char_rows(model: torch.nn.Module, tokenizer, text: str) -> torch.Tensor:
    """[n_tokens, 1024] hidden rows of one text of at most MAX_CHARS characters, without CLS/SEP."""
    inputs = tokenizer(text, return_tensors="pt").to(_model_device(model))
    return selected_hidden(model, inputs)[0, 1:-1]


@torch.inference_mode()
def bert_features(model: torch.nn.Module, tokenizer, norm_text: str, word2ph: Sequence[int]) -> torch.Tensor:
    """Features [1024, sum(word2ph)] for one Chinese segment, in the model's dtype and device."""
    windows = [norm_text[i : i + MAX_CHARS] for i in range(0, len(norm_text), MAX_CHARS)] or [norm_text]
    rows = [_char_rows(model, tokenizer, window) for window in windows]
    chars = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    _check_alignment(norm_text, word2ph, chars.shape[0])
    return expand_to_phones(chars, word2ph)


@torch.inference_mode()
def bert_features_batch(
    model: torch.nn.Module, tokenizer, texts: Sequence[str], word2phs: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """`bert_features` for several Chinese segments in one padded forward pass."""
    if not texts:
        return []
    if any(len(t) > MAX_CHARS for t in texts):  # windows of their own: see MAX_CHARS
        return [bert_features(model, tokenizer, t, w) for t, w in zip(texts, word2phs)]
    inputs = tokenizer(list(texts), return_tensors="pt", padding=True).to(_model_device(model))
    hidden = selected_hidden(model, inputs)
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    out = []
    for row, text, word2ph, length in zip(hidden, texts, word2phs, lengths):
        chars = row[1 : int(length) - 1]
        _check_alignment(text, word2ph, chars.shape[0])
        out.append(expand_to_phones(chars, word2ph))
    return out


def zero_features(
    n_phones: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Features of a non-Chinese segment: upstream uses zeros."""
    return torch.zeros(FEATURE_DIM, n_phones, dtype=dtype, device=device)


def segment_features(model: torch.nn.Module, tokenizer, segments: Sequence) -> list[torch.Tensor]:
    """Features for each frontend segment (objects with language, norm_text, word2ph, phones):
    BERT for Chinese ones (batched), zeros for the rest, all in the model's dtype."""
    chinese = [i for i, s in enumerate(segments) if s.language == "zh"]
    computed = bert_features_batch(
        model, tokenizer, [segments[i].norm_text for i in chinese], [segments[i].word2ph for i in chinese]
    )
    features = [zero_features(len(s.phones), model.dtype, model.device) for s in segments]
    for i, feats in zip(chinese, computed):
        features[i] = feats
    return features


def phone_features(model: torch.nn.Module, tokenizer, segments: Sequence) -> torch.Tensor:
    """All segments' features joined along time: [1024, total phones], the GPT's BERT input."""
    return torch.cat(segment_features(model, tokenizer, segments), dim=1)
