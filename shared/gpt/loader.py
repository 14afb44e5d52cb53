"""Loading official GPT-SoVITS GPT (``.ckpt``) files into :class:`Text2Semantic`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint_io import CheckpointError, check_state_dict_keys, read_checkpoint, require_keys
from .config import ConfigError, GPTConfig
from .model import PE_INITIAL_POSITIONS, Text2Semantic, sine_table

# Our parameter names -> the names inside the official file (after its ``model.`` prefix).
# Upstream's network lived in a Lightning wrapper as ``self.model``; its layers were
# ``torch.nn.MultiheadAttention``-style blocks under ``h.layers``.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"text_embedding\.weight", "ar_text_embedding.word_embeddings.weight"),
    (r"text_alpha", "ar_text_position.alpha"),
    (r"semantic_embedding\.weight", "ar_audio_embedding.word_embeddings.weight"),
    (r"semantic_alpha", "ar_audio_position.alpha"),
    (r"layers\.(\d+)\.qkv\.(weight|bias)", r"h.layers.\1.self_attn.in_proj_\2"),
    (r"layers\.(\d+)\.out_proj\.(\w+)", r"h.layers.\1.self_attn.out_proj.\2"),
    (r"layers\.(\d+)\.ffn_in\.(\w+)", r"h.layers.\1.linear1.\2"),
    (r"layers\.(\d+)\.ffn_out\.(\w+)", r"h.layers.\1.linear2.\2"),
    (r"layers\.(\d+)\.(norm[12])\.(\w+)", r"h.layers.\1.\2.\3"),
)
PREFIX = "model."


def official_name(name: str) -> str:
    """The name under which the official file stores our parameter ``name``."""
    for pattern, replacement in _RENAMES:
        renamed, n = re.subn(rf"^{pattern}$", replacement, name)
        if n:
            return PREFIX + renamed
    return PREFIX + name  # bert_proj.* and ar_predict_layer.weight keep their names


def official_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor an official GPT file holds for ``cfg``, with its shape, in the model's order."""
    with torch.device("meta"):
        model = Text2Semantic(cfg)
    return {official_name(n): tuple(p.shape) for n, p in model.state_dict().items()}


def read_gpt_config(content: Any, path: str) -> GPTConfig:
    """Check that ``content`` is a GPT checkpoint and build its config, with one-line errors."""
    if _looks_like_sovits(content):
        raise CheckpointError(f"{path}: this is a SoVITS (s2) model file, not a GPT (s1) .ckpt")
    require_keys(content, ("weight", "config"), path, "GPT (s1)")
    try:
        return GPTConfig.from_checkpoint_config(content["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad GPT config: {e}") from None


def _looks_like_sovits(content: Any) -> bool:
    if not isinstance(content, Mapping):
        return False
    weights, config = content.get("weight"), content.get("config")
    if isinstance(weights, Mapping) and any(str(k).startswith(("enc_p.", "dec.", "flow.")) for k in weights):
        return True
    model = config.get("model") if isinstance(config, Mapping) else getattr(config, "model", None)
    return (isinstance(model, Mapping) and "inter_channels" in model) or hasattr(model, "inter_channels")


def load_gpt(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Text2Semantic:
    """Load an official GPT checkpoint strictly; ``model.config`` and ``model.early_stop_num`` are set.

    Weights are stored in fp16; they are cast once to ``dtype`` on ``device``. On a CPU, float32
    reproduces upstream's CPU results; float16 decodes ~1.4x faster (half the weight bytes per
    step); bfloat16 works but is slow without AVX512-BF16/AMX (no fast bf16 matrix-vector kernel).
    """
    raw = read_checkpoint(path)
    path = raw.path
    cfg = read_gpt_config(raw.content, path)
    weights = raw.content["weight"]
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{path}: 'weight' is a {type(weights).__name__}, expected a dict of tensors")

    shapes = official_shapes(cfg)
    check_state_dict_keys(weights, set(shapes), path)
    for name, shape in shapes.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            what = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"{path}: {name} is {what}, expected a floating-point tensor")
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f"{path}: {name} has shape {list(tensor.shape)}, the config implies {list(shape)}")

    # Build on the meta device and adopt the file's tensors: no wasted random init of ~77M parameters.
    with torch.device("meta"):
        model = Text2Semantic(cfg)
    state = {name: weights[official_name(name)].to(device=device, dtype=dtype) for name in model.state_dict()}
    model.load_state_dict(state, strict=True, assign=True)
    model.pe = sine_table(PE_INITIAL_POSITIONS, cfg.hidden_dim).to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)
