"""Conditional flow matching, inference side: Euler integration of the DiT's velocity field.

The mel is transported from Gaussian noise at t = 0 to data at t = 1 in ``n_steps`` equal steps,

    x_0 ~ N(0, I) * temperature,   x_{j+1} = x_j + dt * v(x_j, t_j),   t_j = j dt,   dt = 1 / n_steps,

with the prompt (reference) mel given to the estimator as a condition on its first P frames and
those frames of x held at zero throughout; the caller keeps only the frames after the prompt.
The text branch and the step-size code do not depend on t, so they are computed once per run.

No classifier-free guidance: the official pipelines sample with guidance rate 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dit import DiT

# The official UIs offer 4..32 steps; quality stops improving long before 128, and each step is a
# full DiT pass (seconds on CPU), so a larger count is a mistake rather than a request.
MAX_STEPS = 128


def check_steps(n_steps: object) -> int:
    """The step count as an int, or ValueError: an integer in 1..MAX_STEPS (bools refused)."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= MAX_STEPS:
        raise ValueError(f"n_steps must be an integer in 1..{MAX_STEPS}, got {n_steps!r}")
    return n_steps


def draw_noise(features: Tensor, mel_dim: int, temperature: float = 1.0) -> Tensor:
    """The starting point x_0 [B, mel_dim, T], drawn by one ``torch.randn`` in the reference's layout,
    so a fixed ``torch.manual_seed`` gives the reference's noise."""
    batch, length, _ = features.shape
    return torch.randn([batch, mel_dim, length], device=features.device, dtype=features.dtype) * temperature


@torch.inference_mode()
def sample_mel(
    estimator: DiT,
    features: Tensor,
    prompt: Tensor,
    n_steps: int,
    *,
    lengths: Tensor | None = None,
    noise: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Draw a mel for ``features`` continuing ``prompt``.

    features [B, T, text_dim] (one conditioning vector per mel frame, prompt frames included);
    prompt [B, mel_dim, P] with P <= T, the normalised mel of the first P frames; lengths [B] valid
    frames per item when the batch is padded (None: all T); noise [B, mel_dim, T] the starting
    point (None: drawn with :func:`draw_noise`; a given one is used as is, temperature ignored).

    Returns [B, mel_dim, T] float32; the first P frames are zero.
    """
    n_steps = check_steps(n_steps)
    batch, length, text_dim = features.shape
    mel_dim = estimator.config.mel_dim
    if text_dim != estimator.config.text_dim:
        raise ValueError(f"features have {text_dim} channels, the estimator takes {estimator.config.text_dim}")
    if prompt.dim() != 3 or prompt.shape[0] != batch or prompt.shape[1] != mel_dim or prompt.shape[2] > length:
        raise ValueError(f"prompt is {list(prompt.shape)}, expected [{batch}, {mel_dim}, P <= {length}]")
    if noise is None:
        noise = draw_noise(features, mel_dim, temperature)
    elif tuple(noise.shape) != (batch, mel_dim, length):
        raise ValueError(f"noise is {list(noise.shape)}, expected {[batch, mel_dim, length]}")
    if lengths is not None and (lengths.shape != (batch,) or bool((lengths < 1).any() or (lengths > length).any())):
        raise ValueError(f"lengths must be [{batch}] values in 1..{length}")

    # Time-major inside the loop, as the estimator takes it. The state x is integrated in float32
    # whatever the estimator computes in (a bfloat16 DiT on a CPU's matrix units): a 1/n-sized
    # update added in 8 mantissa bits would lose most of itself. For a float32 estimator the casts
    # are no-ops and the arithmetic is the reference's.
    compute = next(estimator.parameters()).dtype
    features = features.to(compute)
    n_prompt = prompt.shape[2]
    cond = features.new_zeros(batch, length, mel_dim)
    cond[:, :n_prompt] = prompt.transpose(1, 2)
    x = noise.float().transpose(1, 2).clone()
    x[:, :n_prompt] = 0

    dt = 1.0 / n_steps
    text = estimator.embed_text(features)
    step = estimator.embed_step(features.new_full((batch,), dt))
    t = 0.0
    for _ in range(n_steps):
        v = estimator.velocity(x.to(compute), cond, text, features.new_full((batch,), t), step, lengths)
        x = x + dt * v.float()
        x[:, :n_prompt] = 0
        t = t + dt  # accumulated, not j * dt: the reference's float times, bit for bit
    return x.transpose(1, 2)
