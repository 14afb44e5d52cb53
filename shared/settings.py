"""Every ``GSV_*`` environment variable: typed, range-checked, documented, in one place.

Each node has one frozen settings dataclass (:class:`TextInputSettings`, :class:`FrontendSettings`,
:class:`BertSettings`, :class:`ReferenceSettings`, :class:`GPTSettings`, :class:`VocoderSettings`,
:class:`SinkSettings`, :class:`HTTPSettings`, and :class:`SentenceStreamSettings` for the operator)
whose ``from_env(env)`` reads its variables. A bad value raises :class:`SettingsError`, one line
naming the variable, the value and what is allowed; a node's ``main()`` reads its settings first and
ends with that line (``node_runtime.fail``) instead of a traceback. An unset or empty variable means
the default.

Each variable is a :class:`Var` that carries its default, how that default is written in the docs
(``shown``) and a one-line description, so ``tests/test_settings.py`` checks the configuration table
of docs/architecture.md against :func:`all_variables` (every variable listed, with its default), and
that every ``GSV_*`` name the code mentions is one of them. Variables that belong to a library layer
rather than one node (model paths, backend choice, the GPT's torch kernel options read by
``gpt.options.TorchGPTOptions``, g2pW, the benchmark) are declared here too (:data:`LIBRARY`), read
where they always were.

Device and precision are parsed here once (:func:`parse_device`, :data:`DTYPES`, :func:`torch_dtype`)
for ``runtime_config``, ``backends.config`` and the benchmark.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar


class SettingsError(ValueError):
    """A variable's value is not allowed: one line naming the variable, the value and the choices."""


# ---- device and precision: the one parser ---------------------------------------------------------
PRECISIONS = ("float32", "float16", "bfloat16")


def _dtype_map() -> dict[str, Any]:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _Dtypes(Mapping[str, Any]):
    """``{"float32": torch.float32, ...}``, importing torch only when first used."""

    def __getitem__(self, name: str) -> Any:
        return _dtype_map()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(PRECISIONS)

    def __len__(self) -> int:
        return len(PRECISIONS)


DTYPES: Mapping[str, Any] = _Dtypes()


def torch_dtype(name: str) -> Any:
    """``float32`` / ``float16`` / ``bfloat16`` -> the torch dtype (SettingsError for anything else)."""
    if name not in PRECISIONS:
        raise SettingsError(f"GSV_DTYPE={name!r} is not one of {', '.join(PRECISIONS)}")
    return DTYPES[name]


def parse_device(name: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` -> ``cpu`` / ``cuda:N``."""
    name = name.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        return "cuda:0"
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise SettingsError(f"GSV_DEVICE={name!r} is not a device (use cpu, cuda or cuda:N)")


def parse_dtype(name: str) -> str:
    name = name.strip()
    if name not in PRECISIONS:
        raise SettingsError(f"GSV_DTYPE={name!r} is not one of {', '.join(PRECISIONS)}")
    return name


# ---- one variable ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Var:
    """One environment variable: its parser, default, how the docs write the default, and a doc line."""

    name: str
    default: Any
    doc: str
    parse: Callable[[str], Any] = str  # raises ValueError/SettingsError on a bad value
    allowed: str = "a string"  # what the parser accepts, for the error line
    shown: str = ""  # the default as docs/architecture.md writes it ("" = str(default))

    @property
    def default_doc(self) -> str:
        if self.shown:
            return self.shown
        return "unset" if self.default is None else str(self.default)

    def read(self, env: Mapping[str, str]) -> Any:
        raw = env.get(self.name)
        if raw is None or not str(raw).strip():
            return self.default
        try:
            return self.parse(str(raw).strip())
        except SettingsError:
            raise
        except (ValueError, TypeError, OverflowError):
            raise SettingsError(f"{self.name}={raw!r}: expected {self.allowed}") from None


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(value)
    return value


def _bounded(
    kind: Callable[[str], Any], low: float | None, high: float | None, low_open: bool = False
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(text)
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(text)
        if high is not None and value > high:
            raise ValueError(text)
        return value

    return parse


def _range_words(noun: str, low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"{noun} in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{noun} <= {high}"
    return noun


def integer(
    name: str, default: int | None, doc: str, low: int | None = None, high: int | None = None, shown: str = ""
) -> Var:
    return Var(name, default, doc, _bounded(int, low, high), _range_words("an integer", low, high), shown)


def number(
    name: str,
    default: float | None,
    doc: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    shown: str = "",
) -> Var:
    return Var(
        name, default, doc, _bounded(float, low, high, low_open), _range_words("a number", low, high, low_open), shown
    )


def flag(name: str, default: bool, doc: str, shown: str = "") -> Var:
    def parse(text: str) -> bool:
        if text not in ("0", "1"):
            raise ValueError(text)
        return text == "1"

    return Var(name, default, doc, parse, "1 or 0", shown or ("1" if default else "0"))


def choice(name: str, default: str, choices: tuple[str, ...], doc: str, lower: bool = True, shown: str = "") -> Var:
    def parse(text: str) -> str:
        value = text.lower() if lower else text
        if value not in choices:
            raise ValueError(text)
        return value

    return Var(name, default, doc, parse, f"one of {', '.join(choices)}", shown or f"`{default}`")


def string(name: str, default: str | None, doc: str, shown: str = "") -> Var:
    return Var(name, default, doc, str, "a string", shown or (f"`{default}`" if default else "unset"))


def path(name: str, default: Path | None, doc: str, shown: str = "") -> Var:
    return Var(
        name, default, doc, lambda t: Path(t).expanduser(), "a path", shown or (f"`{default}`" if default else "unset")
    )


def device_var(name: str = "GSV_DEVICE") -> Var:
    return Var(
        name,
        "cpu",
        "torch device of the node's model (a missing GPU is an error, never a fallback)",
        parse_device,
        "cpu, cuda or cuda:N",
        "`cpu`",
    )


def precision_var(name: str = "GSV_DTYPE") -> Var:
    return Var(
        name,
        "float32",
        "precision of the node's model (bfloat16: torch only)",
        parse_dtype,
        f"one of {', '.join(PRECISIONS)}",
        "`float32`",
    )


def setting(var: Var) -> Any:
    """A settings dataclass field read from ``var``."""
    return dataclasses.field(default=var.default, metadata={"var": var})


S = TypeVar("S", bound="Settings")


class Settings:
    """Base of the per-node settings dataclasses: ``from_env`` reads every field's variable."""

    node: ClassVar[str] = ""

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None) -> S:
        env = os.environ if env is None else env
        values = {f.name: f.metadata["var"].read(env) for f in dataclasses.fields(cls) if "var" in f.metadata}  # type: ignore[arg-type]
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Rules between fields (override); raise SettingsError."""

    @classmethod
    def var(cls, field: str) -> Var:
        """The variable behind one field."""
        return next(f.metadata["var"] for f in dataclasses.fields(cls) if f.name == field)  # type: ignore[arg-type]

    @classmethod
    def variables(cls) -> list[Var]:
        return [f.metadata["var"] for f in dataclasses.fields(cls) if "var" in f.metadata]  # type: ignore[arg-type]


def from_env_or_exit(cls: type[S], env: Mapping[str, str] | None = None) -> S:
    """For a node's main(): its settings, or the node ends with the one line saying what is wrong."""
    try:
        return cls.from_env(env)
    except SettingsError as e:
        from .node_runtime import fail

        fail(str(e))


# ---- shared by several nodes ----------------------------------------------------------------------
LOG_LEVEL = Var(
    "GSV_LOG_LEVEL",
    "INFO",
    "Python log level forwarded into dora's log",
    lambda t: _one_of(t.upper(), ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    "`INFO`",
)
THREADS = integer(
    "GSV_THREADS", None, "CPU threads of torch and ONNX Runtime (0 = their default)", low=0, shown="torch default"
)
NICE = integer("GSV_NICE", None, "scheduling priority (`os.nice`) of the node", low=-20, high=19, shown="0")
TRACE_DIR = path("GSV_TRACE_DIR", None, "folder for per-message time stamps (benchmark/stage_trace.py)")
LANGUAGE = string(
    "GSV_LANGUAGE",
    "auto",
    "language of the text (auto, auto_yue, zh, en, ja, ko, yue, all_zh, all_ja, all_ko, all_yue)",
)
SEED = integer("GSV_SEED", None, "sampling / noise seed (segment i: seed + i)", low=0, shown="random")
MAX_MODELS = integer("GSV_MAX_MODELS", 2, "voices' own weights kept loaded besides the graph's model (LRU)", low=0)


FAIR_SCHEDULING = flag(
    "GSV_FAIR_SCHEDULING",
    False,
    "1: a new utterance's first segment overtakes earlier ones' backlog in text-frontend, bert and the "
    "vocoder (graphs that stream each utterance apart: the HTTP server; not one speaker playing arrivals)",
)


@dataclass(frozen=True)
class RuntimeSettings(Settings):
    """What ``node_runtime`` reads in every node: log level, CPU threads, priority."""

    node: ClassVar[str] = "all"
    log_level: str = setting(LOG_LEVEL)
    threads: int | None = setting(THREADS)
    nice: int | None = setting(NICE)
    trace_dir: Path | None = setting(TRACE_DIR)
    fair_scheduling: bool = setting(FAIR_SCHEDULING)


@dataclass(frozen=True)
class ModelNodeSettings(Settings):
    """What every model-loading node reads: device and precision (the backend choice itself is
    ``backends.config.choice_from_env``, which shares this parser)."""

    device: str = setting(device_var())
    dtype: str = setting(precision_var())

    def torch_device(self) -> Any:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"GSV_DEVICE={self.device} but no CUDA GPU is available to this process")
        return torch.device(self.device)

    def torch_dtype(self) -> Any:
        return torch_dtype(self.dtype)


# ---- the nodes ------------------------------------------------------------------------------------
SPLIT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
SINK_MODES = ("auto", "speaker", "wav", "null")
DIT_COMPILE = choice(
    "GSV_DIT_COMPILE",
    "off",
    ("off", "inductor", "cudagraphs"),
    "v3/v4: the DiT step under torch.compile (inductor; cudagraphs: CUDA only)",
)
VOCODER_FFT = choice(
    "GSV_VOCODER_FFT",
    "auto",
    ("auto", "1", "0"),
    "the generator's long convolutions in the frequency domain (auto: on a CPU in float32)",
)


@dataclass(frozen=True)
class TextInputSettings(Settings):
    node: ClassVar[str] = "text-input"
    text: str | None = setting(string("GSV_TEXT", None, "one text to speak, then finish", shown="demo sentence"))
    text_file: Path | None = setting(path("GSV_TEXT_FILE", None, "speak each non-empty line of this file"))
    listen: str | None = setting(string("GSV_TEXT_LISTEN", None, "serve text lines on host:port (e.g. 127.0.0.1:9871)"))
    language: str = setting(LANGUAGE)
    voice: str = setting(string("GSV_VOICE", "default", "voice name"))

    def check(self) -> None:
        if self.listen is not None:
            _, _, port = self.listen.rpartition(":")
            if port and not (port.isdigit() and 0 <= int(port) <= 65535):
                raise SettingsError(f"GSV_TEXT_LISTEN={self.listen!r}: expected host:port with a port in [0, 65535]")


@dataclass(frozen=True)
class FrontendSettings(Settings):
    node: ClassVar[str] = "text-frontend"
    version: str = setting(
        choice(
            "GSV_VERSION",
            "v2",
            ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"),
            "GPT-SoVITS version (symbol table; which files in the model directory)",
            lower=False,
        )
    )
    split_method: str = setting(
        choice("GSV_SPLIT_METHOD", "cut5", SPLIT_METHODS, "sentence splitting (upstream's cut0-cut5)")
    )
    language: str = setting(LANGUAGE)
    max_segments_ahead: int = setting(integer("GSV_MAX_SEGMENTS_AHEAD", 0, "flow-control window (0 = none)", low=0))
    stall_timeout: float = setting(
        number(
            "GSV_STALL_TIMEOUT",
            0.0,
            "fail utterances in flight after this long without progress (s)",
            low=0.0,
            shown="0",
        )
    )


@dataclass(frozen=True)
class BertSettings(ModelNodeSettings):
    node: ClassVar[str] = "bert"
    onednn: str = setting(
        choice(
            "GSV_BERT_ONEDNN",
            "auto",
            ("auto", "1", "0"),
            "the encoder's float32 CPU products on oneDNN-prepacked weights (auto: on AMD CPUs, where "
            "MKL is 2-3x slower; 0: MKL, features bit-equal to upstream's)",
        )
    )

    @property
    def pack_products(self) -> bool | None:
        """encoders.bert.load_bert's ``pack_products``: None = decided by the CPU."""
        return {"auto": None, "1": True, "0": False}[self.onednn]


@dataclass(frozen=True)
class ReferenceSettings(ModelNodeSettings):
    node: ClassVar[str] = "reference"
    ref_audio: Path | None = setting(
        path("GSV_REF_AUDIO", None, "the default voice's recording", shown="model dir's `voices.yml`")
    )
    prompt_text: str = setting(string("GSV_PROMPT_TEXT", "", "what is said in GSV_REF_AUDIO"))
    prompt_language: str = setting(string("GSV_PROMPT_LANGUAGE", "zh", "its language"))
    voices: Path | None = setting(path("GSV_VOICES", None, "a YAML file of voices", shown="unset"))
    max_models: int = setting(MAX_MODELS)


@dataclass(frozen=True)
class GPTSettings(ModelNodeSettings):
    node: ClassVar[str] = "gpt"
    top_k: int = setting(integer("GSV_TOP_K", 15, "sampling: top-k (0 = off)", low=0))
    top_p: float = setting(number("GSV_TOP_P", 1.0, "sampling: top-p", low=0.0, high=1.0))
    temperature: float = setting(number("GSV_TEMPERATURE", 1.0, "sampling: temperature", low=0.0, low_open=True))
    repetition_penalty: float = setting(
        number("GSV_REPETITION_PENALTY", 1.35, "sampling: repetition penalty", low=0.0, low_open=True)
    )
    seed: int | None = setting(SEED)
    first_chunk_tokens: int = setting(integer("GSV_FIRST_CHUNK_TOKENS", 8, "tokens in the first streamed chunk", low=1))
    chunk_growth: float = setting(number("GSV_CHUNK_GROWTH", 1.5, "growth factor of later chunks", low=1.0))
    chunk_tokens: int = setting(integer("GSV_CHUNK_TOKENS", 40, "largest chunk", low=1))
    max_batch: int = setting(
        integer("GSV_MAX_BATCH", 1, "segments of concurrent utterances decoded together (1 = one at a time)", low=1)
    )
    decode_ahead: int = setting(
        integer("GSV_DECODE_AHEAD", 0, "rows decoding an utterance's next segment early, with spare capacity", low=0)
    )
    decode_threads: int = setting(
        integer(
            "GSV_DECODE_THREADS",
            0,
            "torch threads of a decode step once every running segment has drawn its first chunk"
            " (0 = all the node's threads)",
            low=0,
        )
    )
    max_models: int = setting(MAX_MODELS)

    def sampling(self) -> dict[str, Any]:
        """Keyword arguments of ``gpt.sampling.SamplingParams``."""
        return {
            "top_k": self.top_k,
            "top_p": self.top_p,
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass(frozen=True)
class VocoderSettings(ModelNodeSettings):
    node: ClassVar[str] = "vocoder"
    noise_scale: float = setting(number("GSV_NOISE_SCALE", 0.5, "SoVITS noise scale", low=0.0))
    speed: float = setting(
        number("GSV_SPEED", 1.0, "speech speed (a request's speed overrides it)", low=0.0, low_open=True)
    )
    lookahead_tokens: int = setting(integer("GSV_LOOKAHEAD_TOKENS", 4, "tokens held back for smoother joins", low=0))
    fragment_interval: float = setting(number("GSV_FRAGMENT_INTERVAL", 0.3, "silence after each segment (s)", low=0.0))
    max_chunk_seconds: float = setting(
        number("GSV_MAX_CHUNK_SECONDS", 1.0, "longest audio message (s)", low=0.0, low_open=True)
    )
    seed: int | None = setting(SEED)
    output_sample_rate: int | None = setting(
        integer("GSV_OUTPUT_SAMPLE_RATE", None, "output rate (resampled per chunk)", low=1, shown="model rate")
    )
    max_lead_seconds: float | None = setting(number("GSV_MAX_LEAD_SECONDS", None, "real-time pacing lead (s)", low=0.0))
    coalesce_lead_seconds: float = setting(
        number("GSV_COALESCE_LEAD_SECONDS", 1.0, "lead above which chunks are vocoded together", low=0.0)
    )
    coalesce_queued: bool = setting(
        flag("GSV_COALESCE_QUEUED", True, "vocode a chunk with the next one when that one already waits")
    )
    peak_limit: float = setting(number("GSV_PEAK_LIMIT", 0.0, "output peak limit (0 = off)", low=0.0, shown="off"))
    output_gain: float | None = setting(
        number("GSV_OUTPUT_GAIN", None, "gain before the limit", low=0.0, low_open=True, shown="the limit")
    )
    vocoder_fft: str = setting(VOCODER_FFT)
    dit_compile: str = setting(DIT_COMPILE)
    max_models: int = setting(MAX_MODELS)
    sample_steps: int | None = setting(
        integer(
            "GSV_SAMPLE_STEPS",
            None,
            "v3/v4 flow-matching steps, 1..128 (a request's sample_steps overrides it)",
            low=1,
            high=128,
            shown="32 (v3), 8 (v4)",
        )
    )
    first_run_prompt_frames: int = setting(
        integer(
            "GSV_FIRST_RUN_PROMPT_FRAMES",
            32,
            "v3/v4: reference mel frames prompting a streamed segment's first run (lossy; 0 = all, exact)",
            low=0,
        )
    )
    first_run_threads: int | None = setting(
        integer(
            "GSV_FIRST_RUN_THREADS",
            None,
            "v3/v4 on a CPU: torch threads of a streamed segment's short first run (0 = the node's)",
            low=0,
            shown="1 (0 in gsv-tts)",
        )
    )
    first_run_steps: int | None = setting(
        integer(
            "GSV_FIRST_RUN_STEPS",
            None,
            "v3/v4: flow-matching steps of a streamed segment's first run (lossy)",
            low=1,
            high=128,
            shown="GSV_SAMPLE_STEPS",
        )
    )

    def limiter(self) -> Any:
        """The output limiter (``audio.limiter.PeakLimiter``), or None when GSV_PEAK_LIMIT is off."""
        from .audio.limiter import PeakLimiter

        if self.peak_limit <= 0:
            return None
        return PeakLimiter(self.peak_limit, gain=self.output_gain or self.peak_limit)


@dataclass(frozen=True)
class SinkSettings(Settings):
    node: ClassVar[str] = "audio-sink"
    sink: str = setting(choice("GSV_SINK", "auto", SINK_MODES, "speaker / wav / null (auto: speaker if any)"))
    wav_path: Path = setting(
        path("GSV_WAV_PATH", Path("out/speech.wav"), "WAV file of the wav mode", shown="`out/speech.wav`")
    )
    listener: str | None = setting(
        string("GSV_SINK_LISTENER", None, "play only utterances whose text carried this `listener` (a room)")
    )


@dataclass(frozen=True)
class HTTPSettings(Settings):
    node: ClassVar[str] = "http-server"
    host: str = setting(string("GSV_HTTP_HOST", "127.0.0.1", "address to listen on"))
    port: int = setting(integer("GSV_HTTP_PORT", 8880, "port (0 = any free one)", low=0, high=65535))
    sample_rate: int = setting(integer("GSV_HTTP_SAMPLE_RATE", 24000, "sample rate of the served audio", low=1))
    max_input_chars: int = setting(integer("GSV_HTTP_MAX_INPUT_CHARS", 4096, "longest request text", low=1))
    max_requests: int = setting(integer("GSV_HTTP_MAX_REQUESTS", 8, "requests served at once (more: 429)", low=1))
    timeout: float = setting(
        number("GSV_HTTP_TIMEOUT", 300.0, "longest wait for the next audio (s)", low=0.0, low_open=True, shown="300 s")
    )
    restart_grace: float = setting(
        number("GSV_HTTP_RESTART_GRACE", 120.0, "longest 503 after a node restart (s)", low=0.0, shown="120 s")
    )
    cors_origins: str | None = setting(
        string("GSV_HTTP_CORS_ORIGINS", None, "origins browsers may call the API from (comma-separated, or *)")
    )


@dataclass(frozen=True)
class SentenceStreamSettings(Settings):
    node: ClassVar[str] = "sentence-stream operator"
    min_chars: int = setting(integer("GSV_STREAM_MIN_CHARS", 5, "shortest sentence released", low=0))
    max_chars: int = setting(integer("GSV_STREAM_MAX_CHARS", 80, "longest sentence before a forced cut", low=1))


NODE_SETTINGS: tuple[type[Settings], ...] = (
    RuntimeSettings,
    TextInputSettings,
    FrontendSettings,
    BertSettings,
    ReferenceSettings,
    GPTSettings,
    VocoderSettings,
    SinkSettings,
    HTTPSettings,
    SentenceStreamSettings,
)

# ---- read by library layers, not by one node's settings -------------------------------------------
LIBRARY: tuple[tuple[str, Var], ...] = (
    (
        "model_paths",
        path("GSV_MODEL_DIR", None, "the model directory", shown="`~/.cache/dora-gpt-sovits/pretrained_models`"),
    ),
    ("model_paths", FrontendSettings.variables()[0]),  # GSV_VERSION
    (
        "model_paths",
        path("GSV_GPT_PATH", None, "a GPT .ckpt (overrides the model directory's)", shown="the model directory's"),
    ),
    ("model_paths", path("GSV_SOVITS_PATH", None, "a SoVITS .pth (overrides)", shown="the model directory's")),
    (
        "model_paths",
        path(
            "GSV_VOCODER_PATH",
            None,
            "the v3/v4 mel vocoder: BigVGAN folder (v3) or vocoder.pth (v4) (overrides)",
            shown="the model directory's",
        ),
    ),
    (
        "model_paths",
        path(
            "GSV_SOVITS_BASE_PATH",
            None,
            "the pretrained v3/v4 SoVITS a LoRA fine-tune is merged into (overrides)",
            shown="the model directory's",
        ),
    ),
    (
        "model_paths",
        path("GSV_BERT_DIR", None, "a chinese-roberta directory (overrides)", shown="the model directory's"),
    ),
    (
        "model_paths",
        path("GSV_HUBERT_DIR", None, "a chinese-hubert directory (overrides)", shown="the model directory's"),
    ),
    (
        "model_paths",
        path("GSV_SV_PATH", None, "the speaker-verification .ckpt (overrides)", shown="the model directory's"),
    ),
    ("backends.config", choice("GSV_BACKEND", "torch", ("torch", "onnxruntime", "tensorrt"), "engine of the node")),
    ("backends.config", path("GSV_ONNX_DIR", None, "exported graphs", shown="`<GSV_MODEL_DIR>/onnx`")),
    (
        "backends.config",
        string("GSV_BACKEND_FALLBACK", None, "backend[@device] list tried when unavailable", shown="none"),
    ),
    ("gpt.options", choice("GSV_GPT_QUANT", "auto", ("auto", "none", "fp16"), "GPT decode weight format")),
    ("gpt.options", choice("GSV_HALF_MATVEC", "auto", ("auto", "native", "fbgemm"), "float16 product kernel")),
    ("gpt.options", flag("GSV_FUSED_DECODE", True, "every layer of a decode step in one C++ call")),
    ("gpt.options", choice("GSV_GPT_PREFILL_DTYPE", "float32", ("float32", "bfloat16"), "GPT prefill products")),
    ("gpt.options", choice("GSV_GPT_CACHE_DTYPE", "float32", ("float32", "float16"), "GPT decode KV cache (lossy)")),
    ("gpt.options", flag("GSV_COMPILE", False, "torch.compile the decode step (CUDA)")),
    ("gpt.options", choice("GSV_CUDA_GRAPHS", "auto", ("auto", "1", "0"), "CUDA graphs for the decode step")),
    ("gpt.options", integer("GSV_GPT_READ_EVERY", 12, "static decoder: steps between token reads", low=1)),
    (
        "gpt.options",
        integer("GSV_GPT_CAPACITY", 2524, "static decoder: positions of the device cache (1024 + the step cap)", low=1),
    ),
    (
        "gpt.options",
        path(
            "GSV_COMPILE_CACHE",
            None,
            "Inductor's cache folder",
            shown="`~/.cache/dora-gpt-sovits/inductor/torch-<version>`",
        ),
    ),
    ("text.g2pw", path("GSV_G2PW_DIR", None, "g2pW model (polyphone disambiguation); unset: dictionary rules")),
    ("text.g2pw", path("GSV_G2PW_TOKENIZER", None, "g2pW's tokenizer directory", shown="`GSV_BERT_DIR`")),
    ("benchmark", path("GSV_BENCH_METRICS", None, "the benchmark's metrics file (set by the benchmark)")),
)


def all_variables() -> dict[str, tuple[list[str], Var]]:
    """Every variable: name -> (who reads it, its Var)."""
    out: dict[str, tuple[list[str], Var]] = {}
    for cls in NODE_SETTINGS:
        for var in cls.variables():
            out.setdefault(var.name, ([], var))[0].append(cls.node)
    for reader, var in LIBRARY:
        out.setdefault(var.name, ([], var))[0].append(reader)
    return out
