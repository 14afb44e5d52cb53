"""Random-weight stand-ins for chinese-roberta-wwm-ext-large, in its official file format.

The official model is a Hugging Face `BertForMaskedLM` directory (config.json, vocab.txt,
tokenizer files, pytorch_model.bin). Tests and development need the same format without the
1.3 GB download:
  * "full": the official architecture (hidden 1024, 24 layers, 16 heads, FFN 4096, vocab
    21128) with random weights — for memory/speed measurements.
  * "tiny": hidden 1024 (the GPT's bert_proj expects 1024-d features) but 3 layers, a
    256-wide FFN and a short vocabulary; weights stored in float16 (about 30 MB).
The vocabulary follows the official layout: [PAD], [unused1..99], [UNK], [CLS], [SEP],
[MASK], then single characters (ASCII, punctuation, CJK) and "##" continuation pieces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FULL = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=21128)
TINY = dict(hidden_size=1024, num_hidden_layers=3, num_attention_heads=16, intermediate_size=256, vocab_size=3000)
SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Punctuation the Chinese frontend keeps, plus common full-width marks.
EXTRA_CHARS = "…—“”‘’、。，！？：；（）《》【】·～￥"


def build_vocab(size: int) -> list[str]:
    """A vocabulary of exactly `size` entries in the official order."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + SPECIAL_TOKENS
    singles = [chr(c) for c in range(0x21, 0x7F)] + list(EXTRA_CHARS)
    vocab += [c.lower() for c in singles if not c.isupper()]  # the tokenizer lower-cases
    cjk = (chr(c) for c in range(0x4E00, 0x9FA6))
    pieces = (f"##{chr(c)}" for c in range(0x4E00, 0x9FA6))
    for token in cjk:
        if len(vocab) >= size - size // 10:
            break
        vocab.append(token)
    for token in pieces:
        if len(vocab) >= size:
            break
        vocab.append(token)
    if len(vocab) != size:
        raise ValueError(f"cannot build a vocabulary of {size} tokens")
    return vocab


def roberta_config(dims: dict) -> dict:
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "pad_token_id": 0,
        "directionality": "bidi",
        "pooler_fc_size": 768,
        "pooler_num_attention_heads": 12,
        "pooler_num_fc_layers": 3,
        "pooler_size_per_head": 128,
        "pooler_type": "first_token_transform",
        "output_past": True,
        **dims,
    }


TOKENIZER_CONFIG = {
    "do_lower_case": True,
    "tokenize_chinese_chars": True,
    "strip_accents": None,
    "model_max_length": 512,
    "tokenizer_class": "BertTokenizer",
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
SPECIAL_TOKENS_MAP = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def write_random_roberta(directory: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random BertForMaskedLM directory loadable by `encoders.bert.load_bert`."""
    from transformers import BertConfig, BertForMaskedLM

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    dims = TINY if size == "tiny" else FULL
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = roberta_config(dims)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "vocab.txt").write_text("\n".join(build_vocab(dims["vocab_size"])) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2))

    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**config)).eval()
    state = model.state_dict()
    if size == "tiny":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    # A plain torch.save'd state dict, as the official pytorch_model.bin.
    torch.save(state, out / "pytorch_model.bin")
    return out
