"""Random-weight GPT (Text2Semantic) checkpoints in the exact official ``.ckpt`` format.

For development and tests without the real pretrained files. **The weights are random: the
semantic tokens such a model produces decode to noise.** Only shapes, formats, speed and plumbing
can be checked with it.

    python -m dora_gpt_sovits.devmodels.gpt out.ckpt --size full --max-sec 4
"""

from __future__ import annotations

import argparse
import math
import os
from collections import OrderedDict
from typing import Literal

import torch

from ..gpt.config import GPTConfig
from ..gpt.loader import official_shapes

SIZES: dict[str, dict[str, int]] = {
    "full": {"embedding_dim": 512, "hidden_dim": 512, "head": 16, "n_layer": 24},  # s1longer(-v2).yaml
    "tiny": {"embedding_dim": 64, "hidden_dim": 64, "head": 4, "n_layer": 2},  # like the parity fixture
}


def official_config(size: str, phoneme_vocab_size: int, max_sec: float) -> dict:
    """The training config as upstream stores it: ``s1longer-v2.yaml`` parsed into nested dicts."""
    dims = SIZES[size]
    return {
        "train": {
            "seed": 1234,
            "epochs": 15,
            "batch_size": 8,
            "save_every_n_epoch": 5,
            "precision": "16-mixed",
            "gradient_clip": 1.0,
        },
        "optimizer": {"lr": 0.01, "lr_init": 1e-05, "lr_end": 0.0001, "warmup_steps": 2000, "decay_steps": 40000},
        "data": {"max_eval_sample": 8, "max_sec": max_sec, "num_workers": 4, "pad_val": 1024},
        "model": {
            "vocab_size": 1025,
            "phoneme_vocab_size": phoneme_vocab_size,
            **dims,
            "linear_units": 4 * dims["hidden_dim"],
            "dropout": 0,
            "EOS": 1024,
            "random_bert": 0,
        },
        "inference": {"top_k": 15},
    }


def random_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Scales chosen so that every activation stays of order 1 through the post-norm stack."""
    if name.endswith(".alpha"):
        return 0.6 + 0.9 * torch.rand(shape, generator=g)  # positional weight, nonzero like trained ones
    if ".norm" in name:
        base = 1.0 if name.endswith(".weight") else 0.0
        return base + 0.05 * torch.randn(shape, generator=g)
    if name.endswith("bias"):
        return 0.02 * torch.randn(shape, generator=g)
    if "embedding" in name:
        return 0.5 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) / math.sqrt(shape[-1])  # fan-in scaling for [out, in]


def write_random_gpt(
    path: str | os.PathLike[str],
    size: Literal["tiny", "full"] = "tiny",
    phoneme_vocab_size: int = 732,
    seed: int = 0,
    max_sec: float = 54,
) -> None:
    """Write a random GPT ``.ckpt``: ``{"weight": fp16 OrderedDict ("model." names), "config", "info"}``.

    ``phoneme_vocab_size``: 732 for v2+ files, 512 for v1 GPT files (the v1 *symbol table* has 322
    entries, but v1 GPT checkpoints were trained with a 512-row phone embedding).
    ``max_sec``: the early-stop budget is ``50 * max_sec`` tokens; random models rarely emit EOS,
    so development bundles use a small value to keep runs short.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    config = official_config(size, phoneme_vocab_size, max_sec)
    g = torch.Generator().manual_seed(seed)
    shapes = official_shapes(GPTConfig.from_checkpoint_config(config))
    weight = OrderedDict((name, random_tensor(name, shape, g).half()) for name, shape in shapes.items())
    torch.save({"weight": weight, "config": config, "info": "GPT-e15"}, os.fspath(path))


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight GPT checkpoint (its output is noise).")
    parser.add_argument("path")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--phoneme-vocab-size", type=int, default=732)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sec", type=float, default=54)
    args = parser.parse_args()
    write_random_gpt(args.path, args.size, args.phoneme_vocab_size, args.seed, args.max_sec)
    print(f"wrote {args.path}: random {args.size} GPT weights, for plumbing and speed only - it speaks noise")


if __name__ == "__main__":
    main()
