"""The SoVITS generator on a CPU's matrix units: bfloat16 convolutions, run lengths in buckets.

The HiFi-GAN generator is ~93% of a v1/v2 vocoder's time on a CPU, all of it convolutions. On a
CPU with AMX (or AVX512-BF16) oneDNN runs them in bfloat16 ~3x faster than float32, within ~42 dB
SNR of the float32 waveform (docs/performance.md, "Vocoder on the matrix units"); the text encoder
and the flow, a few % of the time, stay float32 and lose nothing.

Two things make it usable for streaming:

* **Lengths in buckets.** oneDNN builds an AMX convolution for one input length, and building
  costs time proportional to that length (~90 ms per 16-channel layer for a 5 s run, ~2 s for the
  whole generator): the same as running it. Streamed runs all have different lengths, so each run
  is padded to a bucket length (:func:`length_bucket`: at most 25% longer) and the generator zeroes
  the padding after every layer (``Generator.forward(valid_frames=...)``), which leaves the real
  frames exactly as an unpadded run computes them. The small buckets are built at load.
* **Never NaN.** The calls go through :func:`finite_guard.run_finite`: an output that is not finite
  (a half-precision kernel defect, docs/reliability.md) moves the generator to float32 for good,
  with one warning.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cpu_features import matrix_units_for
from ..finite_guard import HALF_DTYPES, module_dtype, run_finite
from .generator import Generator

log = logging.getLogger("dora_gpt_sovits")

SMALLEST_BUCKET = 16  # frames (320 ms at 50 Hz): shorter runs are padded to this
BUCKETS_PER_OCTAVE = 4  # padding wastes at most 25% of a run
WARM_UP_FRAMES = 128  # buckets up to this length (2.6 s of audio) are built at load: most streamed runs


def length_bucket(frames: int) -> int:
    """The padded length of a run of ``frames``: a multiple of 1/4 of the power of two below it."""
    if frames <= SMALLEST_BUCKET:
        return SMALLEST_BUCKET
    step = (1 << (frames.bit_length() - 1)) // BUCKETS_PER_OCTAVE
    return -(-frames // step) * step


def buckets_up_to(frames: int) -> list[int]:
    """Every bucket length from the smallest to the one holding ``frames``."""
    buckets = [SMALLEST_BUCKET]
    while buckets[-1] < frames:
        buckets.append(length_bucket(buckets[-1] + 1))
    return buckets


class HalfPrecisionGenerator(nn.Module):
    """A :class:`Generator` run in ``dtype`` on bucketed lengths; called like the float32 one
    (float32 in, float32 out). Its float32 residual convolutions by FFT are dropped: a half dtype
    takes the direct ones."""

    def __init__(self, generator: Generator, dtype: torch.dtype):
        super().__init__()
        if dtype not in HALF_DTYPES:
            raise ValueError(f"a half dtype is needed, not {dtype}")
        generator.use_spectral_convs(False)
        self.generator = generator.to(dtype)
        for name in ("sample_rate", "hop_length", "load_seconds"):  # what a loaded mel vocoder carries
            if name in generator.__dict__:
                setattr(self, name, generator.__dict__[name])

    def forward(self, z: Tensor, g: Tensor | None = None) -> Tensor:
        frames = z.shape[-1]
        padded = F.pad(z, (0, length_bucket(frames) - frames))

        def run(module: nn.Module) -> Tensor:
            dtype = module_dtype(module)
            return module(padded.to(dtype), None if g is None else g.to(dtype), valid_frames=frames)

        return run_finite(self.generator, run, "SoVITS generator", inputs=(z,)).to(z.dtype)

    @torch.inference_mode()
    def warm_up(self, up_to_frames: int = WARM_UP_FRAMES) -> None:
        """Build the kernels of the buckets up to ``up_to_frames`` now, not in the first utterances."""
        conditioned = self.generator.cond is not None
        channels = self.generator.conv_pre.in_channels
        g = torch.zeros(1, self.generator.cond.in_channels, 1) if conditioned else None
        for frames in buckets_up_to(up_to_frames):
            self(torch.zeros(1, channels, frames), g)


def on_matrix_units(generator: Generator, dtype: torch.dtype, warm_up: bool = True) -> nn.Module:
    """``generator`` as a CPU vocoder in ``dtype`` should run: in that dtype on the matrix units
    where the CPU has them, else float32 as it is (a half dtype without them would be slower), said
    once in the log."""
    if dtype not in HALF_DTYPES:
        return generator
    flag = matrix_units_for(dtype)
    if flag is None:
        log.warning(
            "%s: this CPU has no matrix units for it (none of %s), where it would be slower than float32; "
            "the SoVITS generator stays float32",
            dtype,
            "amx_bf16/avx512_bf16" if dtype == torch.bfloat16 else "amx_fp16",
        )
        return generator
    half = HalfPrecisionGenerator(generator, dtype)
    if warm_up:
        half.warm_up()
    log.info("SoVITS generator in %s on the CPU's matrix units (%s); text encoder and flow in float32", dtype, flag)
    return half
