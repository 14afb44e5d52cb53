"""v3/v4 synthesis: features -> mel by flow matching, chunk by chunk, each chunk prompted by the mel before it.

Upstream generates a sentence's mel in chunks of ``T_chunk`` frames (prompt included): the first
prompted by the reference clip's mel (its last ``T_ref`` frames at most), each later one by the
last frames of the chunk before, then vocodes the whole mel. :class:`MelStream` runs that same
recurrence on runs of tokens as the GPT produces them, so audio starts after the first run:

* Features are recomputed for every token so far (the text encoder sees the segment's prefix);
  a run's frames are ``[boundary(start), boundary(end))`` on the fixed token -> frame grid.
* Each CFM call is prompted by the last ``P`` frames of (reference mel ; mel generated so far)
  with the features those frames were made from; ``P`` is the reference's length (at most
  ``T_ref``), so every chunk sees as much voice context as upstream's first one. A run longer
  than ``T_chunk - P`` frames is split as upstream splits it.
* The run is generated together with the lookahead tokens' frames (right context for the DiT),
  which are then dropped: the next run draws them again, prompted by this run's mel.
* The vocoder runs on the run's mel plus ``margin`` frames of context on each side (the mel
  already made on the left, the lookahead's on the right) and keeps the run's samples; the audio
  just past the run comes back as ``tail`` for the caller's cross-fade.
* The starting noise of the ODE is a function of the frame (:func:`frame_noise`: fixed blocks
  seeded by (seed, block)), so a frame starts from the same noise however the segment is cut into
  runs; streamed and one-shot audio then differ only by what each frame's DiT call could see.

A streamed segment's first run may take lossy shortcuts (:class:`FirstRun`: a shorter prompt, fewer
steps): its DiT calls otherwise push the whole reference prompt (up to 500 frames) through the DiT
``n_steps`` times for a few dozen new frames, which is most of the time to first audio on a CPU.
Later runs are prompted by the whole reference again, and a segment decoded in one call (the stream's
first run is the segment's end) never takes them.

With :func:`upstream_noise` instead (one ``torch.randn`` per call from a generator, in upstream's
layout), a segment decoded in one call with no lookahead is exactly upstream's one-shot synthesis
(same chunks, same noise draws from the same seed, one vocoder pass): what the parity tests use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..audio.mel import MEL_SETTINGS, denormalise_mel, log_mel, normalise_mel
from ..audio.resample import resample
from ..intra_op_threads import intra_op_threads
from .cfm import check_steps, sample_mel
from .mel_synthesizer import MelSynthesizer


@dataclass(frozen=True)
class ChunkPlan:
    """Upstream's chunking constants, in mel frames, and what one mel frame becomes."""

    max_prompt_frames: int  # T_ref
    chunk_frames: int  # T_chunk: prompt + new frames per CFM call
    samples_per_frame: int  # vocoder upsampling
    sample_rate: int  # vocoder output rate


MEL_BINS = 100

CHUNK_PLANS = {
    "v3": ChunkPlan(max_prompt_frames=468, chunk_frames=934, samples_per_frame=256, sample_rate=24000),
    "v4": ChunkPlan(max_prompt_frames=500, chunk_frames=1000, samples_per_frame=480, sample_rate=48000),
}
DEFAULT_STEPS = {"v3": 32, "v4": 8}  # upstream's web UI defaults
VOCODER_MARGIN_FRAMES = 8
# Runs whose CFM call has at most this many frames (prompt included) are short: a streamed first
# run's (64 by default). On a CPU they may run on fewer threads (MelStream's short_call_threads).
SHORT_CALL_FRAMES = 128
TAIL_SECONDS = 0.02
NOISE_BLOCK_FRAMES = 64

# (prompt frames P, first generated frame, stop frame) -> starting noise [1, 100, P + stop - first].
NoiseSource = Callable[[int, int, int], Tensor]


def upstream_noise(generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> NoiseSource:
    """Upstream's draws: one ``randn`` of the call's whole shape (prompt frames included) per call."""

    def draw(prompt: int, first: int, stop: int) -> Tensor:
        return torch.randn([1, MEL_BINS, prompt + stop - first], generator=generator, device=device)

    return draw


def frame_noise(seed: int) -> NoiseSource:
    """Noise by segment frame: blocks of NOISE_BLOCK_FRAMES seeded by (seed, block), the same for a
    frame whichever call draws it (the prompt's frames are held at zero by the sampler anyway)."""

    def block(index: int) -> Tensor:
        return torch.randn(MEL_BINS, NOISE_BLOCK_FRAMES, generator=torch.Generator().manual_seed((seed << 20) + index))

    def draw(prompt: int, first: int, stop: int) -> Tensor:
        frames = torch.zeros(MEL_BINS, 0)
        if stop > first:
            lo, hi = first // NOISE_BLOCK_FRAMES, (stop - 1) // NOISE_BLOCK_FRAMES
            blocks = torch.cat([block(b) for b in range(lo, hi + 1)], -1)
            frames = blocks[:, first - lo * NOISE_BLOCK_FRAMES : stop - lo * NOISE_BLOCK_FRAMES]
        return torch.cat([torch.zeros(MEL_BINS, prompt), frames], -1)[None]

    return draw


@dataclass(frozen=True)
class FirstRun:
    """Lossy shortcuts for a streamed segment's first run (``None``: none, the exact recurrence).

    ``prompt_frames``: the first CFM call is prompted by only the reference's last ``prompt_frames``
    frames (the DiT's cost grows with prompt + new frames, and the prompt is most of them).
    ``steps``: the first run's flow-matching steps, when fewer than the segment's."""

    prompt_frames: int | None = None
    steps: int | None = None

    def __post_init__(self):
        frames = self.prompt_frames
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ValueError(f"first-run prompt frames must be a positive integer, got {self.prompt_frames!r}")
        if self.steps is not None:
            check_steps(self.steps)

    def label(self) -> str:
        """What the shortcut does, for logs and reports: "exact" or e.g. "64 prompt frames, 4 steps"."""
        parts = [f"{self.prompt_frames} prompt frames"] * (self.prompt_frames is not None)
        parts += [f"{self.steps} steps"] * (self.steps is not None)
        return ", ".join(parts) or "exact"


EXACT = FirstRun()


@dataclass(frozen=True)
class MelVoice:
    """A voice prepared once: the speaker vector and the (features, mel) prompt of its reference."""

    ge: Tensor  # [1, gin, 1]
    features: Tensor  # [1, C, P]
    mel: Tensor  # [1, 100, P] normalised


def reference_mel(wav: Tensor, sample_rate: int, version: str) -> Tensor:
    """Reference clip [samples] or [channels, samples] at ``sample_rate`` -> normalised log-mel
    [1, 100, F] at the version's mel rate (channels averaged, resampled as upstream does)."""
    settings = MEL_SETTINGS[version]
    mono = wav.float().reshape(-1, wav.shape[-1]).mean(0, keepdim=True) if wav.dim() == 2 else wav.float()[None]
    if sample_rate != settings.sample_rate:
        mono = resample(mono, sample_rate, settings.sample_rate)
    return normalise_mel(log_mel(mono, settings))


@torch.inference_mode()
def prepare_voice(
    model: MelSynthesizer, prompt_codes: Tensor, prompt_phones: Tensor, spec: Tensor, ref_mel: Tensor
) -> MelVoice:
    """prompt_codes [1, 1, Tp], prompt_phones [1, Np], spec [1, 1025, F] (32 kHz STFT), ref_mel
    [1, 100, F'] (:func:`reference_mel`) -> the voice's prompt, cut to the frames both cover."""
    if prompt_phones.shape[-1] == 0 or prompt_codes.shape[-1] == 0:
        raise ValueError("v3/v4 voices need a reference with its prompt text (prompt tokens and phones)")
    ge = model.speaker_vector(spec)
    features = model.features(prompt_codes, prompt_phones, ge)
    frames = min(features.shape[-1], ref_mel.shape[-1])
    keep = min(frames, CHUNK_PLANS[model.config.model_version].max_prompt_frames)
    mel = ref_mel[..., :frames].to(model.device, model.dtype)
    return MelVoice(ge, features[..., frames - keep : frames], mel[..., frames - keep : frames])


def frame_boundary(tokens: int, frames_per_content_frame: float, speed: float) -> int:
    """First mel frame of token ``tokens`` (2 content frames per token, nearest upsampling)."""
    return math.ceil(2 * tokens / speed * frames_per_content_frame - 1e-6)


class MelStream:
    """One segment: runs of tokens in (in order), mel and audio of each run out."""

    def __init__(
        self,
        model: MelSynthesizer,
        vocoder: nn.Module,
        voice: MelVoice,
        phone_ids: Tensor,
        n_steps: int,
        speed: float = 1.0,
        noise: NoiseSource | None = None,
        margin_frames: int = VOCODER_MARGIN_FRAMES,
        first_run: FirstRun = EXACT,
        short_call_threads: int | None = None,
    ):
        """``short_call_threads``: torch threads for a short run (:meth:`short`; None: unchanged)."""
        self.model, self.vocoder, self.voice = model, vocoder, voice
        self.first_run = first_run
        self.short_call_threads = short_call_threads
        self.phone_ids = phone_ids.reshape(1, -1)
        self.n_steps = check_steps(n_steps)
        self.speed = speed
        self.noise = frame_noise(0) if noise is None else noise
        self.margin = margin_frames
        self.plan = CHUNK_PLANS[model.config.model_version]
        self.tokens = torch.zeros(0, dtype=torch.long)
        self.frames_done = 0
        # (features, mel) of the prompt and of everything generated, trimmed to the prompt length.
        self.context_features = voice.features
        self.context_mel = voice.mel
        self.vocoded_mel = voice.mel[..., :0]  # generated mel kept as the vocoder's left margin
        self.shortcut: FirstRun = EXACT  # what the next CFM call may cut (set per run by decode)

    @property
    def prompt_frames(self) -> int:
        return self.voice.mel.shape[-1]

    def boundary(self, tokens: int, total_frames: int) -> int:
        return min(total_frames, frame_boundary(tokens, self.model.mel_frames_per_content_frame, self.speed))

    @torch.inference_mode()
    def decode(self, run: Tensor, lookahead: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens [n] of the next run and the lookahead [k] after it (k = 0: the segment ends) ->
        (samples of the run [m], tail: samples just past it [j])."""
        self.tokens = torch.cat([self.tokens, run.reshape(-1).long()])
        window = torch.cat([self.tokens, lookahead.reshape(-1).long()])
        last = len(lookahead) == 0
        a = self.frames_done
        # Only a streamed first run cuts corners: a segment in one call stays upstream's synthesis.
        self.shortcut = self.first_run if a == 0 and not last else EXACT
        with intra_op_threads(self.short_call_threads if self.short(len(window)) else None):
            features = self.model.features(window.view(1, 1, -1), self.phone_ids, self.voice.ge, self.speed)
            total = features.shape[-1]
            b = total if last else self.boundary(len(self.tokens), total)
            c = total if last else self.boundary(len(window), total)
            mel = self.generate(a, features[..., a:b], features[..., b:c])
            self.frames_done = b
            return self.vocode(mel[..., : b - a], mel[..., b - a :])

    def short(self, tokens: int) -> bool:
        """Whether a decode up to ``tokens`` is one CFM call of at most SHORT_CALL_FRAMES frames,
        prompt included (a streamed first run with the default shortcut: 64)."""
        context = self.context_mel.shape[-1]
        prompt = min(context, self.shortcut.prompt_frames or context)
        new = frame_boundary(tokens, self.model.mel_frames_per_content_frame, self.speed) - self.frames_done
        return prompt + new <= SHORT_CALL_FRAMES

    def generate(self, first: int, run_features: Tensor, lookahead_features: Tensor) -> Tensor:
        """Normalised mel of the run's frames (from segment frame ``first``) then the lookahead's:
        [1, 100, run + lookahead]."""
        new_per_call = self.plan.chunk_frames - self.prompt_frames
        pieces, lookahead_mel = [], run_features[..., :0]
        run_frames = run_features.shape[-1]
        for i in range(0, max(run_frames, 1), new_per_call):
            chunk = run_features[..., i : i + new_per_call]
            final_piece = i + new_per_call >= run_frames
            extra = lookahead_features if final_piece else lookahead_features[..., :0]
            mel = self.sample(first + i, torch.cat([chunk, extra], -1))
            pieces.append(mel[..., : chunk.shape[-1]])
            self.remember(chunk, mel[..., : chunk.shape[-1]])
            if final_piece:
                lookahead_mel = mel[..., chunk.shape[-1] :]
        return torch.cat([*pieces, lookahead_mel], -1)

    def sample(self, first: int, features: Tensor) -> Tensor:
        """One CFM call prompted by the context: -> normalised mel of ``features``' frames (segment
        frames from ``first``)."""
        if features.shape[-1] == 0:
            return features.new_zeros(1, self.context_mel.shape[1], 0)
        shortcut, self.shortcut = self.shortcut, EXACT  # for this call only: later chunks see the full prompt
        keep = min(self.context_mel.shape[-1], shortcut.prompt_frames or self.context_mel.shape[-1])
        prompt_features, prompt_mel = self.context_features[..., -keep:], self.context_mel[..., -keep:]
        cond = torch.cat([prompt_features, features], -1).transpose(1, 2)
        noise = self.noise(keep, first, first + features.shape[-1]).to(cond)
        steps = min(self.n_steps, shortcut.steps or self.n_steps)
        out = sample_mel(self.model.estimator, cond, prompt_mel, steps, noise=noise)
        return out[..., keep:]

    def remember(self, features: Tensor, mel: Tensor) -> None:
        """The next call's prompt: the last P frames of everything so far, except after a chunk of
        upstream's full size, whose own last frames are upstream's next prompt (for v3 with a long
        reference that chunk is 2 frames shorter than P, and the prompt shrinks with it)."""
        keep = self.prompt_frames
        if features.shape[-1] >= self.plan.chunk_frames - keep:
            self.context_features, self.context_mel = features[..., -keep:], mel[..., -keep:]
            return
        self.context_features = torch.cat([self.context_features, features], -1)[..., -keep:]
        self.context_mel = torch.cat([self.context_mel, mel], -1)[..., -keep:]

    def vocode(self, run_mel: Tensor, lookahead_mel: Tensor) -> tuple[Tensor, Tensor]:
        left = self.vocoded_mel[..., self.vocoded_mel.shape[-1] - min(self.margin, self.vocoded_mel.shape[-1]) :]
        right = lookahead_mel[..., : self.margin]
        mel = denormalise_mel(torch.cat([left, run_mel, right], -1))
        wav = self.vocoder(mel.to(module_dtype(self.vocoder))).reshape(-1).float()
        up = self.plan.samples_per_frame
        begin, end = left.shape[-1] * up, (left.shape[-1] + run_mel.shape[-1]) * up
        tail = wav[end : end + int(TAIL_SECONDS * self.plan.sample_rate)]
        self.vocoded_mel = torch.cat([self.vocoded_mel, run_mel], -1)[..., -self.margin :]
        return wav[begin:end], tail


def module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters(), torch.empty(0)).dtype


@torch.inference_mode()
def synthesize(
    model: MelSynthesizer,
    vocoder: nn.Module,
    voice: MelVoice,
    codes: Tensor,
    phone_ids: Tensor,
    n_steps: int,
    speed: float = 1.0,
    noise: NoiseSource | None = None,
) -> Tensor:
    """One segment in one go: codes [T25] -> waveform [samples]. With ``upstream_noise(generator)``
    this is upstream's synthesis, draw for draw."""
    samples, _ = MelStream(model, vocoder, voice, phone_ids, n_steps, speed, noise).decode(
        codes.reshape(-1), codes.new_zeros(0)
    )
    return samples
