"""The v3/v4 vocoder stage as a library engine: SoVITS v3/v4 + its mel vocoder -> per-segment streams.

Same contract as :class:`engine.VocoderEngine` (``condition`` per voice, ``make_decoder`` per
segment returning a ``token_stream.RunDecoder``), so ``nodes/vocoder.py`` serves either. What a
v3/v4 voice needs beyond the v2 spectrogram: the reference's prompt tokens and its mel
(``voice_ports``), and per segment the prompt text's phones (they ride on the token chunks). The
prepared prompt (``mel_synthesis.MelVoice``) is cached per (voice, prompt phones). ``first_run``
(``mel_synthesis.FirstRun``, GSV_FIRST_RUN_PROMPT_FRAMES / GSV_FIRST_RUN_STEPS in the node) is the
lossy shortcut a streamed segment's first run may take for an earlier first audio.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import messages as m
from .mel_synthesis import CHUNK_PLANS, DEFAULT_STEPS, EXACT, FirstRun, MelStream, MelVoice, frame_noise, prepare_voice
from .mel_synthesizer import MelSynthesizer
from .token_stream import RunDecoder

MAX_PROMPTS_PER_VOICE = 4


@dataclass
class MelVoiceInputs:
    """What the reference node sent for one voice, plus the prompts prepared from it so far."""

    spectrogram: torch.Tensor  # [1, 1025, F]
    prompt_codes: torch.Tensor  # [1, 1, P]
    reference_mel: torch.Tensor  # [1, 100, F'] normalised
    prompts: OrderedDict[tuple[int, ...], MelVoice] = field(default_factory=OrderedDict)


class MelVocoderEngine:
    # Beyond the spectrogram, a voice needs these from the reference node (keyword arguments of condition).
    extra_voice_ports = (m.PROMPT_SEMANTIC, m.REFERENCE_MEL)
    needs_speaker_embedding = False

    def __init__(
        self,
        model: MelSynthesizer,
        vocoder: torch.nn.Module,
        sample_steps: int | None = None,
        speed: float = 1.0,
        first_run: FirstRun = EXACT,
        short_call_threads: int | None = None,
    ):
        self.model = model
        self.vocoder = vocoder
        self.version = model.config.model_version
        self.sample_steps = DEFAULT_STEPS[self.version] if sample_steps is None else m.sample_steps(sample_steps)
        self.speed = speed
        self.first_run = first_run
        self.short_call_threads = short_call_threads

    @classmethod
    def load(
        cls,
        sovits: Path,
        vocoder: Path,
        version: str,
        device: torch.device,
        dtype: torch.dtype,
        lora_base: Path | None = None,
        sample_steps: int | None = None,
        speed: float = 1.0,
    ) -> MelVocoderEngine:
        from .cpu_generator import for_cpu
        from .dit_compile import compile_dit, compile_mode
        from .dit_packed import pack_products, packed_rows_limit
        from .generator import Generator
        from .loader import load_sovits
        from .mel_vocoders import load_mel_vocoder
        from .modulation_memo import memoize_modulation
        from .spectral_conv import spectral_convs_wanted

        # On a CPU a half dtype goes only where the time goes: the DiT (its products run on the
        # matrix units: ~3x in bfloat16 on AMX) and v4's HiFi-GAN vocoder (v1/v2's generator, run
        # as the v1/v2 vocoder runs it: cpu_generator.py, ~2.5x, never NaN). BigVGAN and the small
        # parts stay float32: they cost little, and float32 has no kernel defects to guard against.
        on_cpu = torch.device(device).type == "cpu"
        # GSV_DIT_COMPILE, read (and cudagraphs off CUDA refused) before the load: one line, nothing loaded.
        compiling = compile_mode(os.environ, torch.device(device))
        base = torch.float32 if on_cpu else dtype
        model = load_sovits(sovits, device, base, expected_version=version, lora_base=lora_base)
        if dtype != base:
            model.cfm.estimator.to(dtype)
        if compiling != "off":  # the plain DiT, compiled: no memo, no packed products (dit_compile.py)
            compile_dit(model.cfm.estimator, compiling)
        elif on_cpu:  # the per-step modulation once per step count (lossless; reading it back syncs a GPU)
            memoize_modulation(model.cfm.estimator)
            if dtype == torch.bfloat16 and torch.backends.mkldnn.is_available():
                # Prepacked products (dit_packed.py): ~0.3 s less per first-run call; on a CPU without
                # AMX every call takes them (4-19% faster products at any length there).
                pack_products(model.cfm.estimator, packed_rows_limit())
        mel_vocoder = load_mel_vocoder(version, vocoder, device, base)
        # GSV_VOCODER_FFT as for v1/v2: the long residual convolutions by FFT on a CPU in float32.
        mel_vocoder.use_spectral_convs(spectral_convs_wanted(os.environ, torch.device(device), base))
        if on_cpu and isinstance(mel_vocoder, Generator):
            mel_vocoder = for_cpu(mel_vocoder, dtype)
        # A short run (a streamed first run) on one thread (MelStream.short_call_threads): in the graph
        # the GPT decodes beside it, and under OMP_WAIT_POLICY=PASSIVE a second thread is woken for each
        # of the run's thousands of small operations. Through the graph that took the v4 first run from
        # 1.15 to 0.68 s in bfloat16 (with the packed products) and 2.7-2.8 to 2.3-2.5 s in float32, although
        # float32 alone in a process is faster on two (docs/performance.md, "v4 first run").
        return cls(model, mel_vocoder, sample_steps, speed, short_call_threads=1 if on_cpu else None)

    @classmethod
    def open(
        cls,
        sovits: Path,
        vocoder: Path,
        version: str,
        choice,
        lora_base: Path | None = None,
        sample_steps: int | None = None,
        speed: float = 1.0,
        threads: int | None = None,
        trt_options: dict | None = None,
    ) -> MelVocoderEngine:
        """The DiT and the vocoder on exported graphs (``choice``: a ``backends.config.BackendChoice``
        for onnxruntime or tensorrt); the SoVITS feature part stays torch float32 on the choice's
        device (a few % of the time). ``trt_options``: TensorRT provider options per graph."""
        from ..backends.mel_runtime import open_graph_dit, open_graph_vocoder
        from .loader import load_sovits

        # Graphs first: a missing or stale export fails (and may fall back) before the load.
        dit = open_graph_dit(choice, sovits, lora_base, threads, trt_options)
        graph_vocoder = open_graph_vocoder(choice, vocoder, version, threads, trt_options)
        model = load_sovits(sovits, choice.device, torch.float32, expected_version=version, lora_base=lora_base)
        model.cfm.estimator = dit  # the torch DiT's weights are dropped here
        return cls(model, graph_vocoder, sample_steps, speed)

    @property
    def sample_rate(self) -> int:
        return CHUNK_PLANS[self.version].sample_rate

    @property
    def model_version(self) -> str:
        return self.version

    def condition(
        self,
        spec: np.ndarray,
        sv: np.ndarray | None = None,
        weights: str = "",
        prompt_semantic: np.ndarray | None = None,
        reference_mel: np.ndarray | None = None,
    ) -> MelVoiceInputs:
        if weights:
            raise ValueError(f"{weights}: a voice's own SoVITS weights are not supported for {self.version} yet")
        if prompt_semantic is None or len(prompt_semantic) == 0:
            raise ValueError(
                f"SoVITS {self.version} needs a voice with prompt text (reference-free voices are v2 only)"
            )
        if reference_mel is None:
            raise ValueError(f"SoVITS {self.version} needs the reference mel (reference node too old?)")
        return MelVoiceInputs(
            torch.from_numpy(np.asarray(spec, np.float32))[None],
            torch.from_numpy(np.asarray(prompt_semantic, np.int64)).view(1, 1, -1),
            torch.from_numpy(np.asarray(reference_mel, np.float32))[None],
        )

    def prompt(self, voice: MelVoiceInputs, prompt_phone_ids: tuple[int, ...]) -> MelVoice:
        if prompt_phone_ids not in voice.prompts:
            phones = torch.tensor(prompt_phone_ids, dtype=torch.long).view(1, -1)
            voice.prompts[prompt_phone_ids] = prepare_voice(
                self.model, voice.prompt_codes, phones, voice.spectrogram, voice.reference_mel
            )
            while len(voice.prompts) > MAX_PROMPTS_PER_VOICE:
                voice.prompts.popitem(last=False)
        return voice.prompts[prompt_phone_ids]

    def make_decoder(
        self,
        voice: MelVoiceInputs,
        phone_ids: np.ndarray,
        seed: int,
        request_speed: float | None = None,
        prompt_phone_ids: list[int] | None = None,
        sample_steps: int | None = None,
    ) -> RunDecoder:
        """A decoder of one segment's token runs (in order): (history, run, lookahead, position) ->
        (samples, tail). The history is not needed: the stream keeps every token it was given."""
        if not prompt_phone_ids:
            raise ValueError(f"SoVITS {self.version} needs the prompt text's phones with the tokens")
        stream = MelStream(
            self.model,
            self.vocoder,
            self.prompt(voice, tuple(int(i) for i in prompt_phone_ids)),
            torch.from_numpy(np.asarray(phone_ids, np.int64)),
            self.sample_steps if sample_steps is None else sample_steps,
            self.speed if request_speed is None else request_speed,
            frame_noise(seed),
            first_run=self.first_run,
            short_call_threads=self.short_call_threads,
        )

        def decode(history: np.ndarray, run: np.ndarray, lookahead: np.ndarray, position: int):
            if position != len(stream.tokens):
                raise ValueError(f"runs out of order: run at token {position}, {len(stream.tokens)} decoded")
            return stream.decode(torch.from_numpy(np.asarray(run)), torch.from_numpy(np.asarray(lookahead)))

        return decode

    def warm_up(self, first_chunk_tokens: int = 8, lookahead_tokens: int = 4) -> None:
        """Pays the one-off costs (allocator, kernels) before serving: decodes a segment's first run
        as the graph's first token chunk brings it, with the segment's steps and the first-run
        shortcut, so the first request's DiT meets shapes it has seen. oneDNN builds kernels per
        shape: a first call at the first run's shape took 21.6 s on the full-size v4 DiT (bfloat16,
        2 threads, docs/performance.md) after a warm-up at other shapes, and ~1.8 s the third time."""
        frames = 200
        voice = MelVoiceInputs(
            torch.ones(1, 1025, 100), torch.zeros(1, 1, 40, dtype=torch.long), torch.zeros(1, 100, frames)
        )
        run = max(1, first_chunk_tokens - lookahead_tokens)
        decode = self.make_decoder(voice, np.arange(1, 9), 0, None, list(range(1, 9)))
        decode(np.zeros(0, np.int64), np.arange(run), np.arange(run, run + lookahead_tokens), 0)
