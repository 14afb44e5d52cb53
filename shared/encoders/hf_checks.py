"""Content checks for the Hugging Face model folders (chinese-roberta, chinese-hubert).

transformers builds the network from ``config.json`` and then reads the weights, so the config is
checked first (a 20,000-layer config would take minutes to build before any weight is compared),
and the weight file is opened only if it is a regular file whose zip entries (``.bin``) do not
inflate beyond :func:`checkpoint_io.inflation_budget`. ``.safetensors`` needs no inflation check:
the format stores dense tensors at offsets the reader checks against the file size. After loading,
every parameter and buffer must be finite. Each refusal is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from typing import Any

import torch

from ..checkpoint_io import MAX_CHECKPOINT_BYTES, MAX_LAYERS, CheckpointError, check_inflation
from ..regular_file import open_regular_file

# Inclusive ranges of the config fields both model families use (official values: 24 layers,
# 1024/768 hidden, 16/12 heads, vocab 21128/32). Generous; they bound building time and arithmetic.
INT_RANGES: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, MAX_LAYERS),
    "hidden_size": (1, 1 << 14),
    "intermediate_size": (1, 1 << 16),
    "num_attention_heads": (1, 1 << 10),
    "vocab_size": (1, 1 << 20),
}
OPTIONAL_INT_RANGES: dict[str, tuple[int, int]] = {
    "max_position_embeddings": (1, 1 << 16),
    "num_conv_pos_embeddings": (1, 1024),
    "num_conv_pos_embedding_groups": (1, 1024),
}
CONV_LISTS = ("conv_dim", "conv_kernel", "conv_stride")  # HuBERT's feature extractor


def check_config(config: Any, directory: str) -> None:
    """Types and ranges of the fields that decide the network's size and shapes."""
    values = config.to_dict()
    for name, limits in INT_RANGES.items():
        _check_int(values.get(name), limits, name, directory)
    for name, limits in OPTIONAL_INT_RANGES.items():
        if name in values:
            _check_int(values[name], limits, name, directory)
    if values["hidden_size"] % values["num_attention_heads"]:
        raise CheckpointError(f"{directory}: config.json hidden_size is not divisible by num_attention_heads")
    for name in CONV_LISTS:
        if name in values:
            entries = values[name]
            if not isinstance(entries, (list, tuple)) or not 1 <= len(entries) <= 16:
                raise CheckpointError(
                    f"{directory}: config.json {name} is {entries!r}, expected a list of 1..16 integers"
                )
            for entry in entries:
                _check_int(entry, (1, 1 << 14), f"an entry of {name}", directory)
    eps = values.get("layer_norm_eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise CheckpointError(f"{directory}: config.json layer_norm_eps is {eps!r}, expected a positive number")


def _check_int(value: Any, limits: tuple[int, int], name: str, directory: str) -> None:
    low, high = limits
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{directory}: config.json {name} is {value!r}, expected an integer in {low}..{high}")


def check_weight_files(directory: str, names: Iterable[str]) -> None:
    """Every weight file present is a regular file within the size cap; ``.bin`` archives within budget."""
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            continue
        with open_regular_file(path, MAX_CHECKPOINT_BYTES, "weights", CheckpointError) as f:
            # Only the zip directory is read; a legacy (non-zip) pickle has no entries to inflate.
            if name.endswith(".bin") and zipfile.is_zipfile(f):
                check_inflation(f, os.fstat(f.fileno()).st_size, path)


def check_finite_weights(model: torch.nn.Module, directory: str) -> None:
    """NaN/inf weights load silently and turn every feature into NaN; refuse them by name."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{directory}: {name} holds {bad} NaN/inf values of {tensor.numel()}; the weights are corrupt"
            )
