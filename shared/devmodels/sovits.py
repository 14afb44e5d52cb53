"""Random-weight SoVITS (v1/v2/v2Pro/v2ProPlus) checkpoints in the exact official ``.pth`` format.

For development and tests without the real pretrained files. **The weights are random: the audio
is noise-like.** Scales keep activations of order 1 so the waveform is finite and audible.

File layout (what upstream's ``process_ckpt.savee`` writes): ``torch.save`` of
``{"weight": fp16 state dict without enc_q.* (weight-normed convolutions as weight_g/weight_v),
"config": nested plain dict like configs/s2*.json, "info": str}``; Pro files get the ``05``/``06``
header tag over the zip magic, v1/v2 files keep ``PK``.

    python -m dora_gpt_sovits.devmodels.sovits out.pth --version v2 --size full
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Literal

import torch

from ..checkpoint_io import HEADER_TAGS, write_tagged
from ..sovits.config import SoVITSConfig, config_dict
from ..sovits.loader import FILE_CODEBOOK, WEIGHT_NORMED, module_key_to_file_key
from ..sovits.synthesizer import Synthesizer

VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
SIZES = ("tiny", "full")
DEFAULT_TAGS = {"v1": None, "v2": None, "v2Pro": b"05", "v2ProPlus": b"06"}


def official_config(version: str, size: str) -> SoVITSConfig:
    """configs/s2.json, s2v2Pro.json, s2v2ProPlus.json; tiny shrinks what the fixed widths allow."""
    plus = version == "v2ProPlus"
    upsample_initial = 768 if plus else 512
    if size == "tiny":
        # hidden 192 and gin are pinned by MRTE's fixed widths; keep ProPlus 1.5x wider than Pro.
        upsample_initial = 192 if plus else 128
    return SoVITSConfig(
        model_version=version,
        symbol_version="v1" if version == "v1" else "v2",
        filter_channels=64 if size == "tiny" else 768,
        n_layers=2 if size == "tiny" else 6,
        upsample_initial_channel=upsample_initial,
        upsample_kernel_sizes=(20 if plus else 16, 16, 8, 2, 2),
        gin_channels=1024 if "Pro" in version else 512,
    )


def checkpoint_config(config: SoVITSConfig, version: str) -> dict:
    """Nested dict with the sections and fields of upstream's s2*.json."""
    return {
        "train": {
            "log_interval": 100,
            "eval_interval": 500,
            "seed": 1234,
            "epochs": 100,
            "learning_rate": 0.0001,
            "betas": [0.8, 0.99],
            "eps": 1e-09,
            "batch_size": 32,
            "fp16_run": True,
            "lr_decay": 0.999875,
            "segment_size": 20480,
            "init_lr_ratio": 1,
            "warmup_epochs": 0,
            "c_mel": 45,
            "c_kl": 1.0,
            "text_low_lr_rate": 0.4,
            "grad_ckpt": False,
        },
        "data": {
            "max_wav_value": 32768.0,
            "sampling_rate": config.sampling_rate,
            "filter_length": config.filter_length,
            "hop_length": config.hop_length,
            "win_length": config.win_length,
            "n_mel_channels": 128,
            "mel_fmin": 0.0,
            "mel_fmax": None,
            "add_blank": True,
            "n_speakers": 300,
            "cleaned_text": True,
        },
        "model": {
            **config_dict(config),
            "p_dropout": 0.0 if "Pro" in version else 0.1,
            "resblock": "1",
            "n_layers_q": 3,
            "use_spectral_norm": False,
            "semantic_frame_rate": "25hz",
            "freeze_quantizer": True,
            "version": version,
        },
        "s2_ckpt_dir": "logs/s2/big2k1",
        "content_module": "cnhubert",
    }


def random_tensor(name: str, shape: torch.Size, g: torch.Generator, config: SoVITSConfig) -> torch.Tensor:
    """Fan-in scaled normals; a few modules get gains that keep the whole chain of order 1."""
    randn = lambda: torch.randn(shape, generator=g)  # noqa: E731
    if name.endswith(".gamma"):
        return 1.0 + 0.05 * randn()
    if name.endswith(".beta") or name.endswith(".bias"):
        return 0.02 * randn()
    if name.startswith("prelu."):
        return torch.full(shape, 0.25)
    if "emb_rel" in name:
        return randn() / math.sqrt(shape[-1])
    if name in ("enc_p.text_embedding.weight", "quantizer.embed"):
        return randn()
    if name.startswith("dec.ups."):
        in_ch, _, k = shape  # transposed conv [in, out, k]; each output sample sees in*k/stride taps
        stride = config.upsample_rates[int(name.split(".")[2])]
        return randn() * math.sqrt(stride / (in_ch * k))
    fan_in = math.prod(shape[1:])
    gain = 1.0
    if ".post." in name or "res_skip_layers" in name:
        gain = 0.3  # keep each coupling a moderate shift, so the flow stays well conditioned
    elif name.startswith("dec.resblocks."):
        gain = 0.7  # residual units add up over 3 units x 3 blocks per stage
    elif name == "ref_enc.spectral_in.weight":
        gain = 0.1  # linear spectrogram magnitudes reach ~100 on speech
    return randn() * gain / math.sqrt(fan_in)


def random_state(config: SoVITSConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random module-named weights for ``config``, drawn in a fixed order from one generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Synthesizer(config).state_dict().items()}
    return {name: random_tensor(name, shape, g, config) for name, shape in shapes.items()}


def file_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module names -> file names, weight norm split into (g, v), training-only codebook stats, fp16."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        name = module_key_to_file_key(name)
        if WEIGHT_NORMED.match(name):
            stem = name[: -len(".weight")]
            v = tensor
            # g = ||v|| over all but axis 0 makes the effective weight exactly v.
            out[stem + ".weight_g"] = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
            out[stem + ".weight_v"] = v
        else:
            out[name] = tensor
    embed = out[FILE_CODEBOOK]
    stem = FILE_CODEBOOK[: -len(".embed")]
    out[stem + ".inited"] = torch.ones(1)
    out[stem + ".cluster_size"] = torch.ones(embed.shape[0])
    out[stem + ".embed_avg"] = embed.clone()
    return {k: v.half() for k, v in out.items()}


def write_random_sovits(
    path: str | os.PathLike[str],
    version: Literal["v1", "v2", "v2Pro", "v2ProPlus"] = "v2",
    size: Literal["tiny", "full"] = "tiny",
    seed: int = 0,
    header: str | bytes | None = None,
) -> None:
    """Write a random SoVITS ``.pth``.

    ``header``: ``"PK"`` for a plain zip, a tag such as ``"01"``/``"05"``, or None for what
    upstream's writer does (``05``/``06`` for Pro, ``PK`` otherwise).
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if header is None:
        tag = DEFAULT_TAGS[version]
    else:
        tag = header.encode() if isinstance(header, str) else bytes(header)
        tag = None if tag == b"PK" else tag
        if tag is not None and tag not in HEADER_TAGS:
            raise ValueError(f"header must be 'PK' or one of {sorted(t.decode() for t in HEADER_TAGS)}")
    config = official_config(version, size)
    checkpoint = {
        "weight": file_state(random_state(config, seed)),
        "config": checkpoint_config(config, version),
        "info": f"random dev model ({version}, {size}, seed {seed})",
    }
    write_tagged(checkpoint, path, tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--version", choices=VERSIONS, default="v2")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--header", default=None, help="'PK' or a two-digit tag (default: as upstream)")
    args = parser.parse_args()
    write_random_sovits(args.path, args.version, args.size, args.seed, args.header)


if __name__ == "__main__":
    main()
