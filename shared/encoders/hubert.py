"""CN-HuBERT content features for the prompt (reference) clip.

The model is a Hugging Face ``HubertModel`` directory (``chinese-hubert-base`` layout), read from
local files only. Its positional convolution is stored with the legacy weight-norm names
(``weight_g``/``weight_v``); transformers maps them onto its parametrisation, and we fold that
into a plain weight after checking that every stored tensor was used.

Features follow GPT-SoVITS' prompt path: the raw 16 kHz waveform (no mean/variance
normalisation, no attention mask) with 9600 zero samples appended. 9600 = int(32000 * 0.3): the
reference computes the pad with the 32 kHz rate although the audio is at 16 kHz, so 0.6 s of
silence is appended, and the prompt tokens depend on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoint_io import CheckpointError
from ..finite_guard import require_finite, run_finite
from .hf_checks import check_config, check_finite_weights, check_weight_files

PROMPT_PAD_SAMPLES = int(32000 * 0.3)
SAMPLE_RATE = 16000
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_hubert(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
):
    """Load a local HubertModel directory strictly; weight norm folded; eval mode on device/dtype."""
    from transformers import HubertConfig, HubertModel
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: HuBERT directory not found")
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: HuBERT directory has no config.json")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{directory}: HuBERT directory has no weights ({' or '.join(WEIGHT_FILES)})")
    try:
        config = HubertConfig.from_pretrained(directory, local_files_only=True)
        if config.model_type != "hubert":
            raise CheckpointError(f"{directory}: config.json describes a {config.model_type!r} model, not hubert")
        check_config(config, str(directory))  # before transformers builds the network from it
        check_weight_files(str(directory), WEIGHT_FILES)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the missing/unexpected report is checked below instead
        try:
            model, info = HubertModel.from_pretrained(
                directory, config=config, local_files_only=True, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except CheckpointError:
        raise
    except Exception as e:  # transformers raises OSError/ValueError/RuntimeError/... on bad dirs
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{directory}: cannot load HuBERT ({type(e).__name__}: {first})") from None

    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        desc = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:5]))}" for k, v in problems.items())
        raise CheckpointError(f"{directory}: HuBERT weights do not match its config ({desc})")

    check_finite_weights(model, str(directory))
    fold_parametrizations(model)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def fold_parametrizations(model: torch.nn.Module) -> None:
    """Replace weight-norm parametrisations by the plain weight they compute."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


@torch.inference_mode()
def hubert_features(model, wav16k: Tensor) -> Tensor:
    """Prompt waveform [samples] at 16 kHz in [-1, 1] -> last hidden state [1, 768, frames] (50 Hz).
    Never NaN: a half-precision model that computes NaN is run in float32 from then on
    (``finite_guard``); NaN even then raises ``NonFiniteOutput``."""
    wav = wav16k.reshape(-1).float()
    wav = torch.cat([wav, wav.new_zeros(PROMPT_PAD_SAMPLES)]).unsqueeze(0)
    if isinstance(model, torch.nn.Module):
        hidden = run_finite(model, lambda m: last_hidden(m, wav.to(m.device, m.dtype)), "CN-HuBERT", (wav,))
    else:
        hidden = require_finite(last_hidden(model, wav.to(model.device, model.dtype)), "CN-HuBERT (exported graph)")
    return hidden.transpose(1, 2)


def last_hidden(model, wav: Tensor) -> Tensor:
    """``[1, samples]`` -> ``[1, frames, 768]``; an exported graph (backends.encoder_runtime) has its own."""
    if hasattr(model, "last_hidden"):
        return model.last_hidden(wav)
    return model(wav).last_hidden_state
