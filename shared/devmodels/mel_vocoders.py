"""Random-weight mel vocoders of SoVITS v3 (BigVGAN v2) and v4 (HiFi-GAN) in the official formats.

For development and tests without the real pretrained files. **The weights are random: the audio
is noise-like**, but finite and audible (a log-mel of speech-like levels gives a waveform of a few
tenths of full scale).

* v3, a folder like ``models--nvidia--bigvgan_v2_24khz_100band_256x/``:

  - ``config.json``: NVIDIA's release config (generator and training keys alike); ``full`` is the
    release (24 kHz, 100 bins, upsample_initial_channel 1536, rates [4,4,2,2,2,2], kernels
    [8,8,4,4,4,4], resblock kernels [3,7,11] x dilations [1,3,5], snakebeta in log scale, clamp
    and no bias at the end); ``tiny`` only narrows the channels (128 at the start) and keeps hop 256;
  - ``bigvgan_generator.pt``: ``torch.save({"generator": state dict})`` under BigVGAN's own names
    (``ups.{i}.0.*``, ``*.act.alpha``/``*.act.beta``, resampler taps ``*.upsample.filter`` and
    ``*.downsample.lowpass.filter`` [1, 1, 12]), every convolution weight-normed
    (``weight_g``/``weight_v``), in float16 as lj1995/GPT-SoVITS ships it (215 MiB for 112 M weights).

* v4, ``gsv-v4-pretrained/vocoder.pth``: a plain float32 state dict of upstream's HiFi-GAN
  ``Generator`` (100 mel bins in, 512 channels, rates [10,6,2,2,2], kernels [20,12,4,4,4], resblock
  kernels [3,7,11], conv_post with bias, weight norm already removed). The architecture is fixed
  in code (upstream's and ours: ``mel_vocoders.V4_VOCODER``) except the width, which the loader
  reads from ``conv_pre.weight``: ``tiny`` is 64 channels wide instead of 512.

    python -m dora_gpt_sovits.devmodels.mel_vocoders OUT --version v3 --size tiny
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..sovits.bigvgan import BigVGAN, BigVGANConfig, default_resample_filter
from ..sovits.mel_vocoders import BIGVGAN_CONFIG_FILE, BIGVGAN_WEIGHTS_FILE, V4_VOCODER, build_v4_vocoder

SIZES = ("tiny", "full")
BIGVGAN_CHANNELS = {"tiny": 128, "full": 1536}
V4_CHANNELS = {"tiny": 64, "full": V4_VOCODER["upsample_initial_channel"]}
# conv_post gains that put the output of a speech-level log-mel at a few tenths of full scale
# (BigVGAN's snakes keep more energy than HiFi-GAN's leaky ReLUs).
BIGVGAN_POST_GAIN = 0.15
V4_POST_GAIN = 4.0


def bigvgan_config(size: str) -> dict[str, Any]:
    """config.json of nvidia/bigvgan_v2_24khz_100band_256x (``tiny``: 128 initial channels)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return {
        "resblock": "1",
        "num_gpus": 0,
        "batch_size": 32,
        "learning_rate": 0.0001,
        "adam_b1": 0.8,
        "adam_b2": 0.99,
        "lr_decay": 0.9999996,
        "seed": 1234,
        "upsample_rates": [4, 4, 2, 2, 2, 2],
        "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
        "upsample_initial_channel": BIGVGAN_CHANNELS[size],
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "use_tanh_at_final": False,
        "use_bias_at_final": False,
        "activation": "snakebeta",
        "snake_logscale": True,
        "use_cqtd_instead_of_mrd": True,
        "cqtd_filters": 128,
        "cqtd_max_filters": 1024,
        "cqtd_filters_scale": 1,
        "cqtd_dilations": [1, 2, 4],
        "cqtd_hop_lengths": [512, 256, 256],
        "cqtd_n_octaves": [9, 9, 9],
        "cqtd_bins_per_octaves": [24, 36, 48],
        "mpd_reshapes": [2, 3, 5, 7, 11],
        "use_spectral_norm": False,
        "discriminator_channel_mult": 1,
        "use_multiscale_melloss": True,
        "lambda_melloss": 15,
        "clip_grad_norm": 500,
        "segment_size": 65536,
        "num_mels": 100,
        "num_freq": 1025,
        "n_fft": 1024,
        "hop_size": 256,
        "win_size": 1024,
        "sampling_rate": 24000,
        "fmin": 0,
        "fmax": None,
        "fmax_for_loss": None,
        "num_workers": 4,
        "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
    }


def conv_tensor(
    name: str, shape: torch.Size, g: torch.Generator, rates: tuple[int, ...], post_gain: float
) -> torch.Tensor:
    """Weights of a HiFi-GAN-like generator (our module names), scaled to keep activations of order 1.

    The input is a natural-log mel (values around -5, down to -11.5), hence the small gain of
    conv_pre; ``post_gain`` sets the output level (measured: a few tenths of full scale).
    """
    randn = lambda: torch.randn(shape, generator=g)  # noqa: E731
    if name.endswith(".bias"):
        return 0.02 * randn()
    if name.startswith("ups."):
        in_ch, _, k = shape  # transposed conv [in, out, k]; each output sample sees in*k/stride taps
        return randn() * math.sqrt(rates[int(name.split(".")[1])] / (in_ch * k))
    gain = {"conv_pre.weight": 0.1, "conv_post.weight": post_gain}.get(name, 0.7)  # 0.7: residual units add up
    return randn() * gain / math.sqrt(math.prod(shape[1:]))


def random_bigvgan_state(config: BigVGANConfig, seed: int) -> dict[str, torch.Tensor]:
    """Module-named (bigvgan.py) random weights, the designed resampling filters, snake parameters near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BigVGAN(config).state_dict().items()}
    state = {}
    for name, shape in shapes.items():
        if name.endswith("_filter"):
            state[name] = default_resample_filter()
        elif name.endswith((".alpha", ".beta")):
            base = 0.0 if config.snake_logscale else 1.0
            state[name] = base + 0.1 * torch.randn(shape, generator=g)
        else:
            state[name] = conv_tensor(name, shape, g, config.upsample_rates, BIGVGAN_POST_GAIN)
    return state


def bigvgan_file_key(name: str) -> str:
    """Our BigVGAN module name -> the name in NVIDIA's bigvgan_generator.pt (inverse of ``bigvgan_key``)."""
    parts = name.split(".")
    if parts[0] == "ups":
        return ".".join([parts[0], parts[1], "0", *parts[2:]])
    for ours, theirs in (
        (".alpha", ".act.alpha"),
        (".beta", ".act.beta"),
        (".up_filter", ".upsample.filter"),
        (".down_filter", ".downsample.lowpass.filter"),
    ):
        if name.endswith(ours):
            return name[: -len(ours)] + theirs
    return name


def split_weight_norm(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``X.weight`` -> ``X.weight_g`` (norm over all axes but 0) and ``X.weight_v`` with g * v / |v| == weight."""
    stem = name[: -len(".weight")]
    return {
        stem + ".weight_g": weight.norm(dim=tuple(range(1, weight.dim())), keepdim=True),
        stem + ".weight_v": weight,
    }


def bigvgan_file_state(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        key = bigvgan_file_key(name)
        if key.endswith(".weight"):  # every convolution of BigVGAN is weight-normed
            out.update(split_weight_norm(key, tensor))
        elif key.endswith(".filter"):
            out[key] = tensor.reshape(1, 1, -1)
        else:
            out[key] = tensor
    return {k: v.to(dtype) for k, v in out.items()}


def write_random_bigvgan(folder: str | os.PathLike[str], size: str = "tiny", seed: int = 0) -> Path:
    """Write ``folder/config.json`` and ``folder/bigvgan_generator.pt``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = bigvgan_config(size)
    config = BigVGANConfig.from_dict(raw, "<dev config>")
    (folder / BIGVGAN_CONFIG_FILE).write_text(json.dumps(raw, indent=4) + "\n", encoding="utf-8")
    torch.save({"generator": bigvgan_file_state(random_bigvgan_state(config, seed))}, folder / BIGVGAN_WEIGHTS_FILE)
    return folder


def random_v4_vocoder_state(size: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_v4_vocoder(V4_CHANNELS[size]).state_dict().items()}
    rates = V4_VOCODER["upsample_rates"]
    return {name: conv_tensor(name, shape, g, rates, V4_POST_GAIN) for name, shape in shapes.items()}


def write_random_v4_vocoder(path: str | os.PathLike[str], size: str = "tiny", seed: int = 0) -> None:
    """Write ``vocoder.pth``: a plain float32 state dict."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    torch.save(random_v4_vocoder_state(size, seed), path)


def write_random_mel_vocoder(path: str | os.PathLike[str], version: str, size: str = "tiny", seed: int = 0) -> None:
    """The vocoder of ``version`` at ``path`` (v3: a folder, v4: a file)."""
    if version == "v3":
        write_random_bigvgan(path, size, seed)
    elif version == "v4":
        write_random_v4_vocoder(path, size, seed)
    else:
        raise ValueError(f"SoVITS {version!r} has no mel vocoder (only v3 and v4 do)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="v3: the folder to write; v4: the vocoder.pth to write")
    parser.add_argument("--version", choices=("v3", "v4"), default="v3")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_random_mel_vocoder(args.path, args.version, args.size, args.seed)


if __name__ == "__main__":
    main()
