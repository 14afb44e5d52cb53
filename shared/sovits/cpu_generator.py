"""The SoVITS generator as a CPU runs it: run lengths in buckets, optionally bfloat16 on the matrix units.

The HiFi-GAN generator is ~90% of a v1/v2 vocoder's time on a CPU, all of it convolutions, and
oneDNN builds each convolution's kernel for one input length:

* **Lengths in buckets.** Streamed runs all have different lengths, and a length oneDNN has not
  seen costs a kernel build per layer: in float32 ~47 ms more for the whole generator on the AMD
  EPYC (~40% of a short streamed run), an AMX bfloat16 build as long as the run itself (~2 s for
  5 s of audio). The builds are cached by shape, but streamed runs of real text seldom repeat a
  length. Each run is padded to a bucket length (:func:`length_bucket`: at
  most 25% longer) and the generator zeroes the padding after every layer
  (``Generator.forward(valid_frames=...)``), which leaves the real frames as an unpadded run
  computes them (to rounding: a kernel blocked for another length sums in another order). The
  small buckets are built at load.
* **bfloat16 on the matrix units** (opt-in, ``GSV_DTYPE=bfloat16``). With AMX (or AVX512-BF16)
  oneDNN runs the convolutions in bfloat16 ~3x (1.7x) faster than float32, within ~42 dB SNR of
  the float32 waveform (docs/performance.md, "Vocoder on the matrix units"); the text encoder and
  the flow, a few % of the time, stay float32 and lose nothing. The calls go through
  :func:`finite_guard.run_finite`: an output that is not finite (a half-precision kernel defect,
  docs/reliability.md) moves the generator to float32 for good, with one warning.
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


class BucketedGenerator(nn.Module):
    """A :class:`Generator` run in ``dtype`` on bucketed lengths; called like the float32 one
    (float32 in, float32 out). In a half dtype its float32 spectral convolutions are dropped (it
    takes the direct ones) and its outputs are checked finite."""

    def __init__(self, generator: Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        if dtype not in (torch.float32, *HALF_DTYPES):
            raise ValueError(f"float32 or a half dtype is needed, not {dtype}")
        if dtype != torch.float32:
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

        if module_dtype(self.generator) == torch.float32:  # float32 kernels have no defect to guard against
            return run(self.generator).to(z.dtype)
        return run_finite(self.generator, run, "SoVITS generator", inputs=(z,)).to(z.dtype)

    @torch.inference_mode()
    def warm_up(self, up_to_frames: int | None = None) -> None:
        """Build the kernels of the buckets up to ``up_to_frames`` (default :data:`WARM_UP_FRAMES`)
        now, not in the first utterances."""
        conditioned = self.generator.cond is not None
        channels = self.generator.conv_pre.in_channels
        g = torch.zeros(1, self.generator.cond.in_channels, 1) if conditioned else None
        for frames in buckets_up_to(WARM_UP_FRAMES if up_to_frames is None else up_to_frames):
            self(torch.zeros(1, channels, frames), g)


def for_cpu(generator: Generator, dtype: torch.dtype, warm_up: bool = True) -> BucketedGenerator:
    """``generator`` as a CPU vocoder runs it: on bucketed lengths, in ``dtype`` on the matrix units
    where a half dtype is asked for and the CPU has them, else float32 (a half dtype without them
    would be slower, said once in the log); the small buckets built now unless ``warm_up`` is False."""
    if dtype in HALF_DTYPES and matrix_units_for(dtype) is None:
        log.warning(
            "%s: this CPU has no matrix units for it (none of %s), where it would be slower than float32; "
            "the SoVITS generator stays float32",
            dtype,
            "amx_bf16/avx512_bf16" if dtype == torch.bfloat16 else "amx_fp16",
        )
        dtype = torch.float32
    bucketed = BucketedGenerator(generator, dtype if dtype in HALF_DTYPES else torch.float32)
    if warm_up:
        bucketed.warm_up()
    if dtype in HALF_DTYPES:
        flag = matrix_units_for(dtype)
        log.info("SoVITS generator in %s on the CPU's matrix units (%s); text encoder and flow in float32", dtype, flag)
    return bucketed
