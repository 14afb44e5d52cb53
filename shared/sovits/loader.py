"""Load an official SoVITS ``.pth``: v1/v2/v2Pro/v2ProPlus into :class:`Synthesizer`, v3/v4 (and
their LoRA fine-tunes, merged into the base model) into :class:`MelSynthesizer`.

File layout: ``{"weight": fp16 state dict without enc_q.*, "config": dict or HParams, "info": str}``,
weight-normed convolutions stored as ``weight_g``/``weight_v`` pairs. Loading is strict: apart
from the training-only posterior encoder and codebook statistics every stored tensor must be used
and every model tensor must be present with the right shape. Weight norm is folded here, so the
model never carries parametrisations.

A few module names differ from the file's (the file's names come from ``nn.Sequential`` indices
and flip layers that hold no weights); :data:`FILE_TO_MODULE_PREFIXES` maps them both ways.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint_io import (
    CheckpointError,
    check_state_dict_keys,
    fold_weight_norm,
    read_checkpoint,
    require_keys,
)
from .config import SoVITSConfig
from .lora import lora_rank, merge_lora
from .mel_synthesizer import MelDecoderDims, MelSynthesizer
from .synthesizer import Synthesizer
from .version import SoVITSVersion, detect_version

# (prefix in the file, prefix in our modules)
FILE_TO_MODULE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ref_enc.spectral.0.fc.", "ref_enc.spectral_in."),
    ("ref_enc.spectral.3.fc.", "ref_enc.spectral_out."),
    ("ref_enc.temporal.0.conv1.conv.", "ref_enc.glu_convs.0.conv."),
    ("ref_enc.temporal.1.conv1.conv.", "ref_enc.glu_convs.1.conv."),
    ("ref_enc.slf_attn.", "ref_enc.attn."),
    ("ref_enc.fc.fc.", "ref_enc.proj."),
    ("flow.flows.0.", "flow.couplings.0."),
    ("flow.flows.2.", "flow.couplings.1."),
    ("flow.flows.4.", "flow.couplings.2."),
    ("flow.flows.6.", "flow.couplings.3."),
)
FILE_CODEBOOK = "quantizer.vq.layers.0._codebook.embed"
MODULE_CODEBOOK = "quantizer.embed"

# Stored by the training code, unused at inference.
TRAINING_ONLY_PREFIXES = (
    "enc_q.",
    "linear_mel.",  # v3/v4: an auxiliary mel head of the training loss
    "quantizer.vq.layers.0._codebook.embed_avg",
    "quantizer.vq.layers.0._codebook.cluster_size",
    "quantizer.vq.layers.0._codebook.inited",
)

# File names of the convolutions the training code wraps in weight norm (stored as _g/_v pairs).
WEIGHT_NORMED = re.compile(
    r"^(dec\.ups\.\d+|dec\.resblocks\.\d+\.convs[12]\.\d+"
    r"|(flow\.flows\.\d+|wns1)\.enc\.(in_layers\.\d+|res_skip_layers\.\d+|cond_layer))\.weight$"
)


def file_key_to_module_key(name: str) -> str:
    if name == FILE_CODEBOOK:
        return MODULE_CODEBOOK
    for file_prefix, module_prefix in FILE_TO_MODULE_PREFIXES:
        if name.startswith(file_prefix):
            return module_prefix + name[len(file_prefix) :]
    return name


def module_key_to_file_key(name: str) -> str:
    if name == MODULE_CODEBOOK:
        return FILE_CODEBOOK
    for file_prefix, module_prefix in FILE_TO_MODULE_PREFIXES:
        if name.startswith(module_prefix):
            return file_prefix + name[len(module_prefix) :]
    return name


def load_sovits(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    expected_version: str | None = None,
    lora_base: str | os.PathLike[str] | None = None,
) -> Synthesizer | MelSynthesizer:
    """Read, detect the version, build, fold weight norm, check strictly, move to device/dtype.

    ``expected_version`` (``GSV_VERSION``) is checked against the file and names the version of a
    v3/v4 file that carries no mark; ``lora_base`` is the pretrained model a v3/v4 LoRA file
    fine-tunes (upstream's s2Gv3.pth / s2Gv4.pth). The returned model has ``.config``
    (:class:`SoVITSConfig`), ``.version`` (:class:`SoVITSVersion`) and ``.load_seconds``. Every
    problem with a file is a one-line :class:`CheckpointError` naming it.
    """
    start = time.perf_counter()
    path = os.fspath(path)
    raw = read_checkpoint(path)
    content = raw.content
    state = sovits_state(content, path)
    version = detect_version(raw, state, content["config"], expected_version)
    if version.is_lora:
        state = merge_lora(base_state(lora_base, version, path), state, lora_rank(content, path), path)
    config = SoVITSConfig.from_checkpoint(content["config"], version, path)

    # Built on the meta device (no throw-away random init) and handed the loaded tensors.
    with torch.device("meta"):
        model = (
            MelSynthesizer(config, MelDecoderDims.from_state_dict(state, path))
            if version.is_flow_matching
            else Synthesizer(config)
        )
    expected = model.state_dict()
    check_file_shapes(state, expected, path)  # before folding or casting allocates anything
    state = model_state(state, path)
    check_state_dict_keys(state, set(expected), path)
    # assign=True adopts the loaded tensors instead of copying into (meta) ones.
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    model = model.to(device).eval().requires_grad_(False)
    model.version = version
    model.load_seconds = time.perf_counter() - start
    return model


def sovits_state(content: Any, path: str) -> Mapping[str, torch.Tensor]:
    """The ``weight`` dict of a SoVITS file (a GPT file or anything else is named as such)."""
    refuse_gpt_checkpoint(content, path)
    require_keys(content, ("weight", "config"), path, "SoVITS")
    state = content["weight"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a SoVITS checkpoint ('weight' is not a dict of tensors)")
    return state


def base_state(
    base: str | os.PathLike[str] | None, version: SoVITSVersion, lora_path: str
) -> Mapping[str, torch.Tensor]:
    """The pretrained weights a LoRA file fine-tunes, checked to be that version and not a LoRA itself."""
    official = "s2Gv3.pth" if version.model_version == "v3" else "gsv-v4-pretrained/s2Gv4.pth"
    if base is None or not os.path.exists(base):
        raise CheckpointError(
            f"{lora_path}: a SoVITS {version.model_version} LoRA fine-tune needs its base model "
            f"({official}){f' at {os.fspath(base)}' if base is not None else ''}; "
            "run `gsv-download --version " + version.model_version + "` or set GSV_SOVITS_BASE_PATH"
        )
    base = os.fspath(base)
    raw = read_checkpoint(base)
    state = sovits_state(raw.content, base)
    base_version = detect_version(raw, state, raw.content["config"], version.model_version)
    if base_version.is_lora:
        raise CheckpointError(f"{lora_path}: its base model {base} is itself a LoRA fine-tune")
    return state


def check_file_shapes(file_state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str) -> None:
    """Each stored tensor the model uses has the shape the config implies (``weight_v`` that of the weight)."""
    for name, tensor in file_state.items():
        if name.startswith(TRAINING_ONLY_PREFIXES) or name.endswith(".weight_g"):
            continue  # weight_g is checked against its weight_v when folded
        module_name = file_key_to_module_key(name.removesuffix("_v") if name.endswith(".weight_v") else name)
        if module_name in expected and tensor.shape != expected[module_name].shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[module_name].shape)}"
            )


def model_state(file_state: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """File tensors -> our names, training-only tensors dropped, weight norm folded (in fp32)."""
    kept = {k: v for k, v in file_state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    try:
        folded = fold_weight_norm(kept)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return {file_key_to_module_key(k): v.float() for k, v in folded.items()}


def refuse_gpt_checkpoint(content: Any, path: str) -> None:
    """GPT (s1) files are also {weight, config}; recognise them to say what went wrong."""
    if not isinstance(content, Mapping):
        return
    weight, config = content.get("weight"), content.get("config")
    gpt_names = isinstance(weight, Mapping) and any(isinstance(k, str) and k.startswith("model.ar_") for k in weight)
    gpt_config = (
        isinstance(config, Mapping)
        and isinstance(config.get("model"), Mapping)
        and ("phoneme_vocab_size" in config["model"])
    )
    if gpt_names or gpt_config:
        raise CheckpointError(
            f"{path}: this is a GPT (text-to-semantic) checkpoint, not a SoVITS model; load it as the GPT weights"
        )
