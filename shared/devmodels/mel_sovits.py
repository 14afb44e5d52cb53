"""Random-weight SoVITS v3/v4 checkpoints (and LoRA fine-tunes of them) in the official ``.pth`` format.

For development and tests without the real pretrained files. **The weights are random: the audio
is noise-like.** Scales keep activations of order 1 so the mel, and the waveform vocoded from it,
are finite and audible.

File layout (what upstream's ``SynthesizerTrnV3`` state dict looks like after ``savee``):
``torch.save`` of ``{"weight": fp16 state dict, "config": nested plain dict like configs/s2.json
with model.version "v3"/"v4", "info": str}``. Besides what inference needs (``ssl_proj``,
``quantizer``, ``enc_p``, ``ref_enc``, ``bridge``, ``wns1``, ``cfm.estimator``) it holds what
training leaves in it: the auxiliary mel head ``linear_mel`` and the codebook statistics.
``wns1.enc.*`` convolutions are weight-normed (``weight_g``/``weight_v`` pairs, see
``loader.WEIGHT_NORMED``); ``cfm.estimator.rotary_embed.inv_freq`` is stored, rounded to fp16.

* v3: header tag ``02`` over the zip magic (the official s2Gv3.pth is known by its hash instead);
* v4: a plain zip (``PK``) whose config says model.version "v4", as upstream's own v4 base;
* LoRA fine-tunes (:func:`write_random_lora`): tag ``03`` (v3) / ``04`` (v4), a ``lora_rank``
  entry, peft-named adapters on the DiT's attention projections
  (``cfm.base_model.model.estimator.transformer_blocks.{i}.attn.{to_q,to_k,to_v,to_out.0}.lora_{A,B}.default.weight``,
  A [r, in], B [out, r]) and full copies of the modules that s2_train_v3_lora.py trains
  (``ref_enc``, ``bridge``, ``wns1``, ``linear_mel``).

Sizes: ``full`` is upstream's (text encoder as configs/s2.json, bridge 512, ``wns1`` 8 layers, DiT
1024 x 22, 16 heads, ff x2, text_dim 512, 4 ConvNeXt blocks); ``tiny`` keeps the fixed widths (192
hidden, 768 SSL, 704 reference bins, 100 mel bins) and shrinks the rest (bridge 64, ``wns1`` 2
layers, DiT 128 x 2).

    python -m dora_gpt_sovits.devmodels.mel_sovits out.pth --version v3 --size tiny
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Literal

import torch

from ..checkpoint_io import write_tagged
from ..sovits.config import SoVITSConfig
from ..sovits.dit import DiTConfig, RotaryEmbedding
from ..sovits.lora import LORA_TARGETS, PEFT_PREFIX
from ..sovits.mel_synthesizer import MelDecoderDims, MelSynthesizer
from .sovits import SIZES, checkpoint_config, file_state, random_tensor

VERSIONS = ("v3", "v4")
BASE_TAGS = {"v3": b"02", "v4": None}
LORA_TAGS = {"v3": b"03", "v4": b"04"}
MEL_BINS = 100
# What s2_train_v3_lora.py trains in full besides the adapters (the rest is frozen and not saved).
LORA_FULL_PREFIXES = ("ref_enc.", "bridge.", "wns1.", "linear_mel.")


def official_config(version: str, size: str) -> SoVITSConfig:
    """configs/s2.json (the text encoder, reference encoder and codebook are v2's); the HiFi-GAN
    fields are unused by v3/v4 but kept as upstream's config has them."""
    return SoVITSConfig(
        model_version=version,
        symbol_version="v2",
        filter_channels=64 if size == "tiny" else 768,
        n_layers=2 if size == "tiny" else 6,
        gin_channels=512,
    )


def official_dims(size: str) -> MelDecoderDims:
    if size == "tiny":
        dit = DiTConfig(dim=128, depth=2, heads=2, dim_head=64, ff_mult=2, mel_dim=MEL_BINS, text_dim=64, conv_layers=2)
        return MelDecoderDims(channels=64, wavenet_layers=2, dit=dit)
    dit = DiTConfig(dim=1024, depth=22, heads=16, dim_head=64, ff_mult=2, mel_dim=MEL_BINS, text_dim=512, conv_layers=4)
    return MelDecoderDims(channels=512, wavenet_layers=8, dit=dit)


def dit_tensor(name: str, shape: torch.Size, g: torch.Generator, dims: MelDecoderDims) -> torch.Tensor:
    """The estimator's weights (``name`` without ``cfm.estimator.``): fan-in scaled, so the residual
    stream, the velocity and hence the integrated mel stay of order 1."""
    randn = lambda: torch.randn(shape, generator=g)  # noqa: E731
    if name == "rotary_embed.inv_freq":
        return RotaryEmbedding.exact_inv_freq(dims.dit.dim_head)  # a constant, stored like the official files
    if name.endswith(".bias") or name.endswith(".grn.beta"):
        return 0.02 * randn()
    if name.endswith(".grn.gamma"):
        return 0.1 * randn()  # GRN adds x back itself; trained gammas are small
    if name.endswith(".norm.weight"):
        return 1.0 + 0.05 * randn()
    gain = 1.0
    if ".attn_norm.linear." in name or name.startswith("norm_out.linear."):
        gain = 0.5  # shifts, scales and gates of the adaptive LayerNorms: moderate modulation
    elif name.startswith("text_embed.") and name.endswith("pwconv2.weight"):
        gain = 0.5  # residual ConvNeXt blocks
    fan_in = math.prod(shape[1:])
    return randn() * gain / math.sqrt(fan_in)


def random_state(version: str, size: str, seed: int) -> dict[str, torch.Tensor]:
    """Module-named random weights of a v3/v4 model plus ``linear_mel``, drawn in a fixed order."""
    config, dims = official_config(version, size), official_dims(size)
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MelSynthesizer(config, dims).state_dict().items()}
    shapes["linear_mel.weight"] = torch.Size([MEL_BINS, dims.channels, 1])
    shapes["linear_mel.bias"] = torch.Size([MEL_BINS])
    state = {}
    for name, shape in shapes.items():
        if name.startswith("cfm.estimator."):
            state[name] = dit_tensor(name[len("cfm.estimator.") :], shape, g, dims)
        else:
            state[name] = random_tensor(name, shape, g, config)
    return state


def mel_checkpoint_config(version: str, size: str, lora_rank: int | None = None) -> dict:
    config = checkpoint_config(official_config(version, size), version)
    if lora_rank is not None:  # what webui.py's open1Ba adds before s2_train_v3_lora.py runs
        config["train"]["lora_rank"] = str(lora_rank)
        config["train"]["pretrained_s2G"] = (
            "GPT_SoVITS/pretrained_models/s2Gv3.pth"
            if version == "v3"
            else "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth"
        )
        config["name"] = "dev"
        config["version"] = version
    return config


def _check(version: str, size: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")


def write_random_mel_sovits(
    path: str | os.PathLike[str],
    version: Literal["v3", "v4"] = "v3",
    size: Literal["tiny", "full"] = "tiny",
    seed: int = 0,
) -> None:
    """Write a random SoVITS v3 (tag ``02``) or v4 (plain zip) base model."""
    _check(version, size)
    checkpoint = {
        "weight": file_state(random_state(version, size, seed)),
        "config": mel_checkpoint_config(version, size),
        "info": f"random dev model ({version}, {size}, seed {seed})",
    }
    write_tagged(checkpoint, path, BASE_TAGS[version])


def write_random_lora(
    path: str | os.PathLike[str],
    version: Literal["v3", "v4"] = "v3",
    size: Literal["tiny", "full"] = "tiny",
    rank: int = 8,
    seed: int = 1,
) -> None:
    """Write a random LoRA fine-tune of the ``size`` model: what s2_train_v3_lora.py saves.

    The adapters are drawn so that ``B @ A`` changes each adapted weight by about a tenth of its size.
    """
    _check(version, size)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    dims = official_dims(size)
    full = file_state(random_state(version, size, seed))
    weight = {k: v for k, v in full.items() if k.startswith(LORA_FULL_PREFIXES)}
    g = torch.Generator().manual_seed(seed + 1)
    inner = dims.dit.heads * dims.dit.dim_head
    for i in range(dims.dit.depth):
        for target in LORA_TARGETS:
            in_features, out_features = (inner, dims.dit.dim) if target == "to_out.0" else (dims.dit.dim, inner)
            stem = f"{PEFT_PREFIX}estimator.transformer_blocks.{i}.attn.{target}"
            a = torch.randn(rank, in_features, generator=g) / math.sqrt(in_features)
            b = torch.randn(out_features, rank, generator=g) * 0.1 / math.sqrt(rank)
            weight[f"{stem}.lora_A.default.weight"] = a.half()
            weight[f"{stem}.lora_B.default.weight"] = b.half()
    checkpoint = {
        "weight": weight,
        "config": mel_checkpoint_config(version, size, rank),
        "info": f"random dev LoRA ({version}, {size}, rank {rank}, seed {seed})",
        "lora_rank": rank,
    }
    write_tagged(checkpoint, path, LORA_TAGS[version])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--version", choices=VERSIONS, default="v3")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-rank", type=int, default=None, help="write a LoRA fine-tune of this rank instead")
    args = parser.parse_args()
    if args.lora_rank is None:
        write_random_mel_sovits(args.path, args.version, args.size, args.seed)
    else:
        write_random_lora(args.path, args.version, args.size, args.lora_rank, args.seed)


if __name__ == "__main__":
    main()
