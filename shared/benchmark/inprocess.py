"""The whole pipeline in one process, stage by stage: text -> frontend -> BERT -> GPT -> vocoder.

It does what the dataflow's nodes do for one utterance (prompt phones and prompt BERT features
cached per voice, as the text-frontend and bert nodes cache them; the reference encoded once, as the
reference node does), with a timer around each stage, so one run yields both the per-stage
breakdown and the end-to-end real-time factor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..gpt.sampling import SamplingParams
from ..model_paths import ModelPaths
from ..settings import FrontendSettings, VocoderSettings
from ..sovits.mel_synthesis import MelVoice
from ..sovits.version import FLOW_MATCHING_VERSIONS
from ..text.frontend import PhoneSegment, text_to_phones
from ..text.frontend_engine import symbol_version
from ..text.sentence_split import prepare_sentences
from ..voices import Voice
from .cases import TextCase
from .system import peak_gpu_mib, peak_rss_mib, reset_peak_gpu, reset_peak_rss, rss_mib, synchronize

NOISE_SCALE = VocoderSettings.noise_scale  # the vocoder node's default (upstream's): 0.5
FRAGMENT_INTERVAL_S = VocoderSettings.fragment_interval  # silence the vocoder node appends to each segment: 0.3
SPLIT_METHOD = FrontendSettings.split_method  # the text-frontend node's default: cut5


@dataclass
class Models:
    paths: ModelPaths
    device: torch.device
    dtype: torch.dtype
    gpt: torch.nn.Module
    gpt_stream: Callable  # the gpt node's decode: its GSV_GPT_QUANT/GSV_COMPILE options applied
    gpt_options: str  # what they resolved to, for the report
    sovits: torch.nn.Module
    bert: object  # encoders.bert.Bert
    hubert: torch.nn.Module
    sv: torch.nn.Module | None
    load_s: dict[str, float]
    rss_after_load_mib: float | None
    gpt_decode_weight_bytes: int = 0  # what one decode step reads of weights (decode_weight_bytes)
    gpt_cache_bytes_per_position: int = 0  # what it reads of cached keys/values per position (cache_bytes_per_position)
    mel_vocoder: torch.nn.Module | None = None  # v3/v4: BigVGAN / the v4 HiFi-GAN after the flow matching
    vocoder_dtype: torch.dtype | None = None  # the vocoder stage's precision (None: ``dtype``)

    @property
    def flow_matching(self) -> bool:
        return self.mel_vocoder is not None

    @property
    def sample_rate(self) -> int:
        if self.flow_matching:
            from ..sovits.mel_synthesis import CHUNK_PLANS

            return CHUNK_PLANS[self.paths.version].sample_rate
        return self.sovits.config.sampling_rate

    @property
    def symbol_version(self) -> str:
        return symbol_version(self.paths.version)


def load_models(
    paths: ModelPaths, device: torch.device, dtype: torch.dtype, vocoder_dtype: torch.dtype | None = None
) -> Models:
    """Every model as its node loads it; ``vocoder_dtype`` (default ``dtype``): the SoVITS vocoder's,
    as the vocoder node's own GSV_DTYPE."""
    from ..encoders.bert import load_bert
    from ..encoders.hubert import load_hubert
    from ..gpt.loader import load_gpt
    from ..gpt.options import TorchGPTOptions, describe, make_decoder, stream_function
    from ..sovits.engine import load_torch_sovits

    load_s: dict[str, float] = {}

    def timed(name: str, load: Callable[[], object]) -> object:
        started = time.perf_counter()
        model = load()
        load_s[name] = round(time.perf_counter() - started, 3)
        return model

    gpt = timed("gpt", lambda: load_gpt(paths.gpt, device=device, dtype=dtype))
    # The same decode the gpt node runs (GSV_GPT_QUANT=auto packs float16 weights on a CPU...).
    options = TorchGPTOptions.from_env(os.environ)
    decoder = timed("gpt_options", lambda: make_decoder(gpt, options))
    gpt_stream = stream_function(decoder)
    mel_vocoder = None
    if paths.version in FLOW_MATCHING_VERSIONS:  # the vocoder node's v3/v4 engine, loaded as it loads it
        from ..sovits.mel_engine import MelVocoderEngine

        engine = timed(
            "sovits+vocoder",
            lambda: MelVocoderEngine.load(
                paths.sovits, paths.vocoder, paths.version, device, vocoder_dtype or dtype, lora_base=paths.sovits_base
            ),
        )
        sovits, mel_vocoder = engine.model, engine.vocoder
    else:  # the vocoder node's model and convolutions (GSV_VOCODER_FFT=auto: the long ones by FFT on a CPU)
        sovits = timed("sovits", lambda: load_torch_sovits(paths.sovits, device, vocoder_dtype or dtype))
    bert = timed("bert", lambda: load_bert(paths.bert, device=device, dtype=dtype, pack_products=None))  # as the node
    hubert = timed("hubert", lambda: load_hubert(paths.hubert, device=device, dtype=dtype))
    sv = None
    if sovits.version.model_version in ("v2Pro", "v2ProPlus"):
        from ..encoders.speaker_verification import load_speaker_verification

        sv = timed("sv", lambda: load_speaker_verification(paths.sv, device=device, dtype=dtype))
    return Models(
        paths, device, dtype, gpt, gpt_stream, describe(decoder), sovits, bert, hubert, sv, load_s, rss_mib(),
        decode_weight_bytes(gpt), cache_bytes_per_position(gpt, getattr(decoder, "cache_dtype", None)), mel_vocoder,
        vocoder_dtype,
    )  # fmt: skip


def decode_weight_bytes(gpt: torch.nn.Module) -> int:
    """Bytes of weights one GPT decode step streams: the decoder layers' and the logits projection's
    products, in the format the step reads them (the float16 copy where there is one). The step's
    time floor is this over the machine's read bandwidth, plus the cached keys/values
    (:func:`cache_bytes_per_position`)."""
    total = 0
    for module in [*gpt.layers.modules(), *gpt.ar_predict_layer.modules()]:
        half = getattr(module, "half_weight", None)
        if half is not None:
            total += half.numel() * half.element_size()
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
    return total


def cache_bytes_per_position(gpt: torch.nn.Module, stored: torch.dtype | None = None) -> int:
    """Bytes of cached keys and values one decode step reads per cached position: 2 x layers x
    width, in the dtype the cache holds (``stored``, GSV_GPT_CACHE_DTYPE; None: the model's)."""
    cfg = gpt.config
    dtype = stored or getattr(gpt, "cache_dtype", torch.float32)
    return 2 * cfg.n_layer * cfg.hidden_dim * torch.empty(0, dtype=dtype).element_size()


@dataclass
class VoicePrompt:
    """Everything per voice that the nodes compute once and cache."""

    prompt_runs: list[PhoneSegment]
    prompt_ids: torch.Tensor  # [P_phones] int64
    prompt_bert: torch.Tensor  # [1024, P_phones], model dtype
    prompt_tokens: torch.Tensor | None  # [P] int64; None for a reference-free voice
    spectrogram: torch.Tensor  # [1, 1025, F]
    sv_emb: torch.Tensor | None  # [1, 20480] for v2Pro/v2ProPlus
    encode_s: float
    mel_voice: MelVoice | None = None  # v3/v4: the reference's (features, mel) prompt


@torch.inference_mode()
def prepare_voice(models: Models, voice: Voice) -> VoicePrompt:
    from ..encoders.reference_encoder import ReferenceEncoder
    from ..text.frontend_engine import prompt_phones

    started = time.perf_counter()
    # The reference node's encoder (the graph's SoVITS quantizer for every voice, as before).
    encoder = ReferenceEncoder(
        models.hubert, models.sovits, models.sv, models.device, open_sovits=lambda _: models.sovits
    )
    features = encoder.encode(voice)
    spec = torch.from_numpy(features.spectrogram)[None].to(models.device, models.dtype)
    tokens, runs = None, []
    if voice.prompt_text.strip():
        tokens = torch.from_numpy(features.prompt_semantic).to(models.device)
        # The text-frontend node's own prompt preparation (final punctuation rule included).
        runs = prompt_phones(voice.prompt_text, voice.prompt_language, models.symbol_version)
    sv_emb = None
    if features.speaker_embedding is not None:
        sv_emb = torch.from_numpy(features.speaker_embedding)[None].to(models.device, models.dtype)
    ids = torch.tensor([i for r in runs for i in r.phone_ids], dtype=torch.long, device=models.device)
    bert = run_features(models, runs)
    mel_voice = None
    if models.flow_matching:
        from ..sovits.mel_synthesis import prepare_voice as prepare_mel_voice

        if tokens is None:
            raise ValueError(f"SoVITS {models.paths.version} needs a voice with prompt text")
        mel = torch.from_numpy(features.reference_mel)[None]
        mel_voice = prepare_mel_voice(models.sovits, tokens.view(1, 1, -1), ids[None], spec, mel)
    synchronize(models.device)
    return VoicePrompt(runs, ids, bert, tokens, spec, sv_emb, time.perf_counter() - started, mel_voice)


def run_features(models: Models, runs: list[PhoneSegment]) -> torch.Tensor:
    """Per-phone BERT features of frontend runs: roberta for Chinese runs, zeros otherwise (the bert node)."""
    from ..encoders.bert import bert_features

    columns = []
    for run in runs:
        if run.language == "zh":
            columns.append(bert_features(models.bert.model, models.bert.tokenizer, run.norm_text, run.word2ph))
        else:
            columns.append(torch.zeros(1024, len(run.phone_ids), dtype=models.dtype, device=models.device))
    if not columns:
        return torch.zeros(1024, 0, dtype=models.dtype, device=models.device)
    return torch.cat(columns, dim=1).to(models.dtype)


@dataclass
class SegmentRun:
    text: str
    target_phones: int
    prompt_phones: int
    prompt_tokens: int
    frontend_s: float
    bert_s: float
    gpt_prefill_s: float  # GPT call -> first token sampled (prefill forward + first sample)
    gpt_decode_s: float  # first token -> last token
    gpt_steps: int  # decode steps run, the prefill step included
    tokens: list[int]  # every kept generated token (what the GPT node streams to the vocoder)
    vocoder_s: float
    audio_s: float  # speech, without the inter-segment pause
    audio: torch.Tensor = field(repr=False)  # [samples] float32 on the CPU, for comparisons with upstream

    @property
    def decode_tokens(self) -> int:
        return self.gpt_steps - 1  # the steps after the prefill's


@dataclass
class CaseRun:
    case: str
    segments: list[SegmentRun] = field(default_factory=list)
    split_s: float = 0.0
    wall_s: float = 0.0
    first_audio_s: float | None = None  # text in -> first segment's audio computed (no IPC, no jitter buffer)
    peak_rss_mib: float | None = None
    peak_gpu_mib: float | None = None

    @property
    def audio_s(self) -> float:
        """Audio as played: speech plus the pause after each segment (RTF convention of the anchors)."""
        return sum(s.audio_s + FRAGMENT_INTERVAL_S for s in self.segments)

    def stage_seconds(self) -> dict[str, float]:
        return {
            "frontend": self.split_s + sum(s.frontend_s for s in self.segments),
            "bert": sum(s.bert_s for s in self.segments),
            "gpt_prefill": sum(s.gpt_prefill_s for s in self.segments),
            "gpt_decode": sum(s.gpt_decode_s for s in self.segments),
            "vocoder": sum(s.vocoder_s for s in self.segments),
        }

    def token_hash(self) -> str:
        return token_hash([s.tokens for s in self.segments])


def token_hash(segments: list[list[int]]) -> str:
    """Short hash of every segment's token sequence: equal hashes = the same tokens were decoded."""
    h = hashlib.sha256()
    for tokens in segments:
        h.update(np.asarray(tokens, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:12]


class Pipeline:
    """``tokens_per_segment`` caps every segment's decoding (``early_stop_num``): random-weight GPTs
    rarely emit EOS, and a fixed budget makes every run decode the same number of steps. Segment
    ``i`` of a text is sampled with seed ``seed + i``, as the gpt node does with ``GSV_SEED``.
    ``sample_steps``: the v3/v4 flow-matching steps (None: the version's default)."""

    def __init__(
        self,
        models: Models,
        voice: VoicePrompt,
        tokens_per_segment: int,
        seed: int,
        params: SamplingParams = SamplingParams(),
        sample_steps: int | None = None,
    ):
        self.models = models
        self.voice = voice
        self.tokens_per_segment = tokens_per_segment
        self.seed = seed
        self.params = params
        self.sample_steps = sample_steps

    def sampling(self, seed: int) -> SamplingParams:
        return dataclasses.replace(self.params, early_stop_num=self.tokens_per_segment, seed=seed)

    @torch.inference_mode()
    def run(self, case: TextCase) -> CaseRun:
        device = self.models.device
        reset_peak_rss()
        reset_peak_gpu(device)
        result = CaseRun(case.name)
        started = time.perf_counter()
        pieces = prepare_sentences(case.text, case.language, SPLIT_METHOD)
        result.split_s = time.perf_counter() - started
        for index, piece in enumerate(pieces):
            segment = self.segment(piece, case.language, self.seed + index)
            result.segments.append(segment)
            if result.first_audio_s is None:
                result.first_audio_s = time.perf_counter() - started
        result.wall_s = time.perf_counter() - started
        result.peak_rss_mib = peak_rss_mib()
        result.peak_gpu_mib = peak_gpu_mib(device)
        return result

    @torch.inference_mode()
    def inputs(self, case: TextCase) -> list[dict[str, torch.Tensor]]:
        """Each segment's GPT and vocoder inputs, exactly as :meth:`run` builds them (for upstream)."""
        segments = []
        for piece in prepare_sentences(case.text, case.language, SPLIT_METHOD):
            runs = text_to_phones(piece, case.language, self.models.symbol_version)
            target = torch.tensor([i for r in runs for i in r.phone_ids], dtype=torch.long)
            bert = torch.cat([self.voice.prompt_bert, run_features(self.models, runs)], dim=1)
            segments.append(
                {
                    "phone_ids": torch.cat([self.voice.prompt_ids.cpu(), target]),
                    "bert": bert.float().cpu(),
                    "target_ids": target,
                    # What upstream's BERT step gets per run: normalised text and phones per character (zh),
                    # else only the phone count (its features are zeros).
                    "bert_runs": [
                        {
                            "language": r.language,
                            "norm_text": r.norm_text,
                            "word2ph": list(r.word2ph or []),
                            "phones": len(r.phone_ids),
                        }
                        for r in runs
                    ],
                }
            )
        return segments

    def segment(self, piece: str, language: str, seed: int) -> SegmentRun:
        m, device, voice = self.models, self.models.device, self.voice
        t0 = time.perf_counter()
        runs = text_to_phones(piece, language, m.symbol_version)
        target = torch.tensor([i for r in runs for i in r.phone_ids], dtype=torch.long, device=device)
        t1 = time.perf_counter()
        bert = torch.cat([voice.prompt_bert, run_features(m, runs)], dim=1)
        synchronize(device)
        t2 = time.perf_counter()
        stream = m.gpt_stream(torch.cat([voice.prompt_ids, target]), bert, voice.prompt_tokens, self.sampling(seed))
        tokens = [next(stream)]  # the token is on the host: the prefill has finished
        t3 = time.perf_counter()
        tokens.extend(stream)
        t4 = time.perf_counter()
        assert stream.result is not None
        generator = torch.Generator(device).manual_seed(seed)
        codes = torch.tensor(tokens, dtype=torch.long, device=device)
        if m.flow_matching:
            from ..sovits.mel_synthesis import DEFAULT_STEPS, synthesize, upstream_noise

            steps = self.sample_steps or DEFAULT_STEPS[m.paths.version]
            noise = upstream_noise(generator, device)  # upstream's draws: its audio can be compared with ours
            wav = synthesize(m.sovits, m.mel_vocoder, voice.mel_voice, codes, target[None], steps, noise=noise)
        else:
            wav = m.sovits.decode(
                codes[None, None],
                target[None],
                [voice.spectrogram],
                noise_scale=NOISE_SCALE,
                speed=1.0,
                sv_emb=None if voice.sv_emb is None else [voice.sv_emb],
                generator=generator,
            )
        samples = wav.reshape(-1).float().cpu()  # the vocoder node hands numpy audio to dora: include the copy
        t5 = time.perf_counter()
        return SegmentRun(
            text=piece,
            target_phones=int(target.numel()),
            prompt_phones=int(voice.prompt_ids.numel()),
            prompt_tokens=0 if voice.prompt_tokens is None else int(voice.prompt_tokens.numel()),
            frontend_s=t1 - t0,
            bert_s=t2 - t1,
            gpt_prefill_s=t3 - t2,
            gpt_decode_s=t4 - t3,
            gpt_steps=stream.result.n_steps,
            tokens=tokens,
            vocoder_s=t5 - t4,
            audio_s=samples.numel() / m.sample_rate,
            audio=samples,
        )
