"""The mel vocoders of SoVITS v3 and v4, loaded from user files without executing pickled code.

Both map a natural-log mel spectrogram ``[B, 100, T]`` -- the CFM's output *after* de-normalisation
(``(x + 1) / 2 * 14 - 12``), i.e. ``log(clamp(|STFT| mel, 1e-5))`` -- to a waveform ``[B, 1, T * hop]``:

* v3: BigVGAN v2 (bigvgan.py) from a folder holding ``config.json`` and ``bigvgan_generator.pt``
  (``{"generator": state dict}``, weight norm as ``weight_g``/``weight_v`` pairs, or already folded);
  24 kHz, hop 256 for the official release.
* v4: our HiFi-GAN :class:`Generator` without conditioning and with a conv_post bias, from
  ``vocoder.pth`` (a plain state dict: upstream strips weight norm from the module before loading it);
  48 kHz, hop 480. Its architecture is fixed in code as upstream hard-codes it, except the width
  (``upsample_initial_channel``, 512 in the release), which is read from ``conv_pre.weight`` so that
  narrow test models load too.

Rules shared with the other loaders: files are read by :func:`read_checkpoint` (restricted
unpickler, size and content budgets, finite weights), every shape is checked against the config
before anything is allocated, weight norm is folded in float32, the key check is strict (a missing
or unknown tensor is refused), and every problem is one :class:`CheckpointError` line naming the
file. The modules are returned in eval mode without gradients.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checkpoint_io import CheckpointError, check_state_dict_keys, fold_weight_norm, read_checkpoint, require_keys
from .bigvgan import BigVGAN, BigVGANConfig, default_resample_filter
from .generator import Generator

BIGVGAN_CONFIG_FILE = "config.json"
BIGVGAN_WEIGHTS_FILE = "bigvgan_generator.pt"
V3_SAMPLE_RATE = 24_000
V4_SAMPLE_RATE = 48_000
MAX_V4_WIDTH = 4096
V4_VOCODER = dict(
    in_channels=100,
    upsample_initial_channel=512,
    upsample_rates=(10, 6, 2, 2, 2),
    upsample_kernel_sizes=(20, 12, 4, 4, 4),
    resblock_kernel_sizes=(3, 7, 11),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    gin_channels=0,
    post_bias=True,
)


def load_mel_vocoder(
    version: str, path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The vocoder of SoVITS ``version`` ("v3": a BigVGAN folder, "v4": ``vocoder.pth``).

    The module maps log-mel ``[B, 100, T]`` -> wav ``[B, 1, T * hop_length]`` and carries
    ``sample_rate``, ``hop_length`` and ``load_seconds``.
    """
    if version == "v3":
        return load_bigvgan(path, device, dtype)
    if version == "v4":
        return load_v4_vocoder(path, device, dtype)
    raise ValueError(f"SoVITS {version!r} has no mel vocoder (only v3 and v4 do)")


def build_v4_vocoder(upsample_initial_channel: int = V4_VOCODER["upsample_initial_channel"]) -> Generator:
    return Generator(**{**V4_VOCODER, "upsample_initial_channel": upsample_initial_channel})


def load_v4_vocoder(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Generator:
    start = time.perf_counter()
    path = os.fspath(path)
    state = _tensor_dict(read_checkpoint(path).content, path, "v4 vocoder")
    width = state.get("conv_pre.weight")
    stages = len(V4_VOCODER["upsample_rates"])
    if width is None or width.dim() != 3 or not 0 < width.shape[0] <= MAX_V4_WIDTH or width.shape[0] % (1 << stages):
        shape = None if width is None else tuple(width.shape)
        raise CheckpointError(
            f"{path}: not a v4 vocoder (conv_pre.weight is {shape}; expected [width, 100, 7] with a width "
            f"divisible by {1 << stages}, at most {MAX_V4_WIDTH})"
        )
    with torch.device("meta"):
        model = build_v4_vocoder(width.shape[0])
    model = _adopt(model, state, {}, path)
    model.sample_rate, model.hop_length = V4_SAMPLE_RATE, 480
    return _finish(model, device, dtype, start)


def load_bigvgan(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> BigVGAN:
    """BigVGAN from ``folder/config.json`` and ``folder/bigvgan_generator.pt``."""
    start = time.perf_counter()
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise CheckpointError(
            f"{folder}: BigVGAN folder {what} (expected {BIGVGAN_CONFIG_FILE} and {BIGVGAN_WEIGHTS_FILE} inside)"
        )
    config_path = os.path.join(folder, BIGVGAN_CONFIG_FILE)
    weights_path = os.path.join(folder, BIGVGAN_WEIGHTS_FILE)
    for needed in (config_path, weights_path):
        if not os.path.exists(needed):
            raise CheckpointError(f"{needed}: missing from the BigVGAN folder")
    try:
        config = BigVGANConfig.from_json(config_path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None

    content = read_checkpoint(weights_path).content
    require_keys(content, ("generator",), weights_path, "BigVGAN")
    state = _tensor_dict(content["generator"], weights_path, "BigVGAN")
    state = {bigvgan_key(k): v for k, v in state.items()}
    if config.activation == "snake":  # one parameter: the magnitude is the frequency
        state.update({k[: -len("alpha")] + "beta": v for k, v in state.items() if k.endswith(".alpha")})
    with torch.device("meta"):
        model = BigVGAN(config)
    # Checkpoints carry the resampling filters; a file without them gets the designed ones.
    filters = {k: default_resample_filter() for k in model.state_dict() if k.endswith("_filter")}
    model = _adopt(model, state, filters, weights_path)
    # upstream assumes 24 kHz whatever the folder holds; a config that states its rate is believed
    model.sample_rate, model.hop_length = config.sampling_rate or V3_SAMPLE_RATE, config.hop_length
    return _finish(model, device, dtype, start)


# BigVGAN's file names -> ours: each upsampler sat in a one-element list, each activation wrapped
# the snake (``act``) between two resamplers holding their filters [1, 1, taps]; type-2 residual
# blocks call their only convolutions ``convs``.
_BIGVGAN_RENAMES = (
    (".act.alpha", ".alpha"),
    (".act.beta", ".beta"),
    (".upsample.filter", ".up_filter"),
    (".downsample.lowpass.filter", ".down_filter"),
)


def bigvgan_key(name: str) -> str:
    if name.startswith("ups.") and name.split(".")[2:3] == ["0"]:
        head, index, _, rest = name.split(".", 3)
        name = f"{head}.{index}.{rest}"
    name = name.replace(".convs.", ".convs1.")
    for old, new in _BIGVGAN_RENAMES:
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def _tensor_dict(obj: Any, path: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a {what} checkpoint (expected a dict of tensors, got {type(obj).__name__})")
    return dict(obj)


def _adopt(model: nn.Module, state: dict[str, torch.Tensor], defaults: dict[str, torch.Tensor], path: str) -> Any:
    """Check shapes (before folding allocates), fold weight norm, check keys strictly, load."""
    expected = model.state_dict()
    for name, tensor in state.items():
        target = name.removesuffix("_v") if name.endswith(".weight_v") else name
        if target not in expected:
            continue  # reported by the key check
        need = expected[target].shape
        # filters are stored [1, 1, taps] in BigVGAN files; everything else exactly as we hold it
        fits = tensor.numel() == need.numel() if target.endswith("_filter") else tensor.shape == need
        if not fits:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the architecture needs {tuple(need)}"
            )
    try:
        state = fold_weight_norm(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    state = {**defaults, **state}
    check_state_dict_keys(state, set(expected), path)
    model.load_state_dict({k: v.float().reshape(expected[k].shape) for k, v in state.items()}, strict=True, assign=True)
    return model


def _finish(model: nn.Module, device: str | torch.device, dtype: torch.dtype, start: float) -> Any:
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.load_seconds = time.perf_counter() - start
    return model
