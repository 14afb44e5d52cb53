"""The message contract between the nodes of the dataflow: ports, Arrow types, metadata keys.

Every port carries one flat Arrow array (no lists, no structs) so receivers can view it as numpy or
torch without a copy, plus flat dora metadata (bool/int/float/str/list). 2-D payloads are flattened
in row-major order and carry their shape in ``shape``. docs/messages.md is the human-readable
version of this module; keep the two in step.

Zero-copy rules:

* Sending: :func:`arrow_from_numpy` wraps the numpy (or torch-derived) buffer as an Arrow array
  without copying; dora then moves it into shared memory (its one transport copy).
* Receiving: :func:`numpy_view` returns a read-only numpy view over the Arrow buffer that dora
  mapped from shared memory, and :func:`tensor_view` a torch tensor over the same memory.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch


class MessageError(ValueError):
    """A message on a port does not follow the contract (wrong Arrow type, missing metadata...)."""


# What a bad value makes Python, numpy or Arrow raise while a message is decoded. A decoder only
# reads its input, so turning these into MessageError loses no state: the node drops that one
# message with a log line and keeps serving (tests/test_fuzz_messages.py feeds arbitrary ones).
_BAD_VALUE_ERRORS = (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError, pa.ArrowException)


@contextmanager
def decoding(port: str) -> Iterator[None]:
    """Any bad value met inside becomes a MessageError naming ``port``."""
    try:
        yield
    except MessageError:
        raise
    except _BAD_VALUE_ERRORS as e:
        raise MessageError(f"port '{port}': malformed message ({type(e).__name__}: {e})") from None


# ---- port names -------------------------------------------------------------------------------
# Inputs and outputs are named after what they carry; the YAML wires them.
TEXT = "text"  # Utf8[1]: text to speak                       -> text-frontend
VOICE_PROMPT = "voice_prompt"  # Utf8[1]: the voice's prompt text  reference -> text-frontend
PHONEMES = "phonemes"  # Int64[T]: prompt+target phone ids      text-frontend -> bert
PHONE_FEATURES = "phone_features"  # Float32[1024*T]: BERT per phone   bert -> gpt
PROMPT_SEMANTIC = "prompt_semantic"  # Int64[P]: reference tokens    reference -> gpt
REFERENCE_SPECTROGRAM = "reference_spectrogram"  # Float32[1025*F]  reference -> vocoder
SPEAKER_EMBEDDING = "speaker_embedding"  # Float32[20480] (v2Pro*)  reference -> vocoder
REFERENCE_MEL = "reference_mel"  # Float32[100*F] (v3/v4)  reference -> vocoder
SEMANTIC_TOKENS = "semantic_tokens"  # Int64[n]: a chunk of tokens      gpt -> vocoder
AUDIO = "audio"  # Float32[n] mono in [-1, 1], sample_rate metadata   vocoder -> sink
METRICS = "metrics"  # Utf8[1] JSON: per-utterance timing            sink -> anyone
CONTROL = "control"  # Utf8[1] command word ("stop"); anyone -> text-frontend -> every stage
SEGMENT_COMPLETE = "segment_complete"  # Utf8[1] "done": a segment left the speaker  sink -> frontend
VOICE_REQUEST = "voice_request"  # Utf8[1]: a voice name  text-frontend, gpt, vocoder -> reference
# The reference node's inputs for voice requests from the model nodes (a restarted gpt or vocoder
# lost its voices and asks for the part it needs again):
GPT_VOICE_REQUEST = "gpt_voice_request"
VOCODER_VOICE_REQUEST = "vocoder_voice_request"

# ---- metadata keys ----------------------------------------------------------------------------
UTTERANCE_ID = "utterance_id"  # str: one text request
SEGMENT_INDEX = "segment_index"  # int: sentence-sized piece of the utterance, from 0
UTTERANCE_FINAL = "utterance_final"  # bool: this is the utterance's last segment
CHUNK_INDEX = "chunk_index"  # int: chunk within the segment, from 0
SEGMENT_FINAL = "segment_final"  # bool: last chunk of the segment
SAMPLE_RATE = "sample_rate"  # int: audio samples per second
VOICE = "voice"  # str: voice name (a reference audio + its prompt text)
LANGUAGE = "language"  # str: language code of the request or segment
SHAPE = "shape"  # list[int]: shape of a flattened 2-D payload
PHONE_IDS = "phone_ids"  # list[int]: target phone ids (vocoder needs them with the tokens)
PROMPT_PHONE_IDS = "prompt_phone_ids"  # list[int]: the prompt text's phone ids (v3/v4 vocoders)
N_PROMPT_PHONES = "n_prompt_phones"  # int: leading phones that belong to the prompt text
RUN_LANGUAGES = "run_languages"  # list[str]: language of each run inside a segment
RUN_TEXTS = "run_texts"  # list[str]: normalised text of each run
RUN_PHONE_COUNTS = "run_phone_counts"  # list[int]: phones of each run
WORD2PH = "word2ph"  # list[int]: phones per character, concatenated over Chinese runs
TEXT_RECEIVED_AT = "text_received_at"  # float: unix seconds when the text entered the graph
SEGMENT_TEXT = "segment_text"  # str: the segment's raw text, for logs
ERROR = "error"  # str: set when a stage could not produce its part
DEVELOPMENT_MODEL = "development_model"  # bool: weights are random, audio is noise
RESTARTED = "restarted"  # str: marker message: this node restarted, the work in flight through it is lost
RESTART_READY = "restart_ready"  # bool on a marker: the restarted node is serving again (absent: it went down)
# Per-request options (set by the text's sender, carried on every segment; absent = node default):
TOP_K = "top_k"  # int: GPT top-k sampling
TOP_P = "top_p"  # float: GPT nucleus sampling
TEMPERATURE = "temperature"  # float: GPT sampling temperature
SPEED = "speed"  # float: vocoder speaking rate (1.0 = natural)
SAMPLE_STEPS = "sample_steps"  # int: v3/v4 flow-matching steps (more = slower, finer)
LISTENER = "listener"  # str: who hears the utterance (a room): the audio-sink with that GSV_SINK_LISTENER
MAX_SAMPLE_STEPS = 128
CANCEL_BEFORE = "cancel_before"  # float: a stop cancels utterances whose text arrived before this
CANCELLED = "cancelled"  # bool: the segment was cut short by a stop
FLUSH = "flush"  # bool: dora drops what is still queued at the receiver's input (new turn after a stop)

STOP = "stop"  # the one control word: cancel (all, or the utterance named by utterance_id)

# streamed LLM text (operators/sentence_stream.py)
FINAL = "final"  # bool on a text delta: the LLM's turn ends with this delta
TURN_ID = "turn_id"  # str: one LLM turn, whose sentences become utterances "<turn_id>.<n>"
SENTENCE_INDEX = "sentence_index"  # int: sentence of the turn, from 0
# an ad-hoc voice on a text request (the reference node encodes it, cached by content)
REF_AUDIO = "ref_audio"  # str: path of a reference recording
PROMPT_TEXT = "prompt_text"  # str: what is said in it ("" = reference-free)
PROMPT_LANGUAGE = "prompt_language"  # str: its language
WEIGHTS = "weights"  # str: the voice's own GPT .ckpt (on prompt_semantic) / SoVITS .pth (reference_spectrogram)

DEFAULT_VOICE = "default"
FEATURE_DIM = 1024  # chinese-roberta-large hidden size, which the GPT's bert_proj expects


# ---- zero-copy conversion ---------------------------------------------------------------------
_ARROW_TYPES = {
    np.dtype(np.float32): pa.float32(),
    np.dtype(np.int64): pa.int64(),
    np.dtype(np.int32): pa.int32(),
    np.dtype(np.int16): pa.int16(),
}


def arrow_from_numpy(array: np.ndarray) -> pa.Array:
    """Wrap a C-contiguous numpy buffer as a flat Arrow array without copying it."""
    if array.dtype not in _ARROW_TYPES:
        raise MessageError(f"unsupported payload dtype {array.dtype}")
    if not array.flags.c_contiguous:
        # Only non-contiguous inputs pay a copy; producers hand over contiguous tensors.
        array = np.ascontiguousarray(array)
    flat = array.reshape(-1)
    return pa.Array.from_buffers(_ARROW_TYPES[flat.dtype], len(flat), [None, pa.py_buffer(flat)])


def arrow_from_tensor(tensor: torch.Tensor) -> pa.Array:
    """Flatten a CPU tensor into an Arrow array sharing its memory (moved to CPU if needed)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
        t = t.float()
    return arrow_from_numpy(t.contiguous().numpy())


def arrow_from_float32(values: np.ndarray | torch.Tensor) -> pa.Array:
    """A float32 payload from either a tensor or an array, without copying either."""
    if isinstance(values, torch.Tensor):
        return arrow_from_tensor(values)
    return arrow_from_numpy(np.asarray(values, dtype=np.float32))


def numpy_view(value: Any, dtype: np.dtype | type, port: str) -> np.ndarray:
    """Read-only numpy view over a flat Arrow payload; refuses the wrong Arrow type."""
    expected = _ARROW_TYPES[np.dtype(dtype)]
    if not isinstance(value, pa.Array):
        raise MessageError(f"port '{port}': expected an Arrow array, got {type(value).__name__}")
    if value.type != expected:
        raise MessageError(f"port '{port}': expected a flat {expected} array, got {value.type}")
    if value.null_count:
        raise MessageError(f"port '{port}': payload contains nulls")
    return value.to_numpy(zero_copy_only=True)


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A torch tensor over a (read-only) numpy view, sharing memory.

    torch warns that it cannot protect read-only memory; consumers here never write into inputs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def read_text(value: Any, port: str = TEXT) -> str:
    """The single string of a Utf8 message (kokoro contract: first element of a string array)."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if not isinstance(value, pa.Array) or not (pa.types.is_string(value.type) or pa.types.is_large_string(value.type)):
        got = value.type if isinstance(value, pa.Array) else type(value).__name__
        raise MessageError(f"port '{port}': expected a Utf8 string array, got {got}")
    if len(value) == 0:
        raise MessageError(f"port '{port}': empty string array")
    try:
        item = value[0].as_py()
    except UnicodeDecodeError as e:  # Arrow does not check UTF-8 that a producer built from raw buffers
        raise MessageError(f"port '{port}': the string is not valid UTF-8 ({e})") from None
    if item is None:
        raise MessageError(f"port '{port}': the string is null")
    return item


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent (UTF-8 has no lone surrogates, which JSON's ``\\ud800`` and
    ``os.environ`` can put into a Python str), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (
            f"it holds a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}, which is not valid Unicode"
        )
    return None


def text_array(text: str) -> pa.Array:
    if (problem := unicode_problem(text)) is not None:
        raise MessageError(f"text cannot be sent: {problem}")
    return pa.array([text], type=pa.string())


def require(metadata: Mapping[str, Any], port: str, *keys: str) -> None:
    if not isinstance(metadata, Mapping):
        raise MessageError(f"port '{port}': metadata is {type(metadata).__name__}, not a mapping")
    missing = [k for k in keys if k not in metadata]
    if missing:
        raise MessageError(f"port '{port}': missing metadata {missing}")


def _items(value: Any) -> list[Any]:
    """A list-valued metadata entry; a string is one value, not a list of its characters."""
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return list(value)


def read_shape(md: Mapping[str, Any], port: str, size: int) -> list[int]:
    """The ``shape`` of a flattened payload of ``size`` values: non-negative ints whose product is size."""
    with decoding(port):
        shape = [int(s) for s in _items(md[SHAPE])]
    # math.prod on Python ints cannot overflow, unlike np.prod, so a huge shape cannot pass as small.
    if any(s < 0 for s in shape) or math.prod(shape) != size:
        raise MessageError(f"port '{port}': shape {shape} does not fit {size} values")
    return shape


def new_utterance_id() -> str:
    return uuid.uuid4().hex[:12]


# ---- typed messages ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestOptions:
    """Per-request overrides of the GPT's sampling and the vocoder's speed, and who hears the
    request (``listener``: the sink with that ``GSV_SINK_LISTENER``); None = node default.

    They ride on the text message and then on every segment's metadata (only the keys that are
    set), so one graph serves requests with different settings side by side.
    """

    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    speed: float | None = None
    sample_steps: int | None = None
    listener: str | None = None

    def metadata(self) -> dict[str, Any]:
        values = {
            TOP_K: self.top_k,
            TOP_P: self.top_p,
            TEMPERATURE: self.temperature,
            SPEED: self.speed,
            SAMPLE_STEPS: self.sample_steps,
            LISTENER: self.listener,
        }
        return {k: v for k, v in values.items() if v is not None}

    def sampling(self) -> dict[str, Any]:
        """The set sampling overrides, as keyword arguments of ``gpt.sampling.SamplingParams``."""
        values = {"top_k": self.top_k, "top_p": self.top_p, "temperature": self.temperature}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], port: str) -> RequestOptions:
        try:
            return cls(
                top_k=None if md.get(TOP_K) is None else int(md[TOP_K]),
                top_p=None if md.get(TOP_P) is None else float(md[TOP_P]),
                temperature=None if md.get(TEMPERATURE) is None else float(md[TEMPERATURE]),
                speed=None if md.get(SPEED) is None else float(md[SPEED]),
                sample_steps=None if md.get(SAMPLE_STEPS) is None else sample_steps(md[SAMPLE_STEPS]),
                listener=None if md.get(LISTENER) is None else str(md[LISTENER]),
            )
        except (TypeError, ValueError, OverflowError) as e:
            raise MessageError(f"port '{port}': malformed request option ({e})") from None


def sample_steps(value: Any) -> int:
    """A flow-matching step count: an integer 1..MAX_SAMPLE_STEPS (4.0 is accepted as 4, 4.5 is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"sample_steps must be an integer, got {value!r}")
    if not 1 <= int(value) <= MAX_SAMPLE_STEPS:
        raise ValueError(f"sample_steps must be 1..{MAX_SAMPLE_STEPS}, got {value!r}")
    return int(value)


@dataclass
class TextRequest:
    """text-input, http-server, sentence-stream (anyone) -> text-frontend: one utterance's text.

    ``to_message`` stamps what is unset: a new ``utterance_id``, ``text_received_at`` = now. An empty
    ``language`` / ``voice`` is not sent (the frontend's ``GSV_LANGUAGE`` / the default voice).
    ``options`` travel as their metadata keys; ``extra`` carries any other keys along (an ad-hoc
    voice's ``ref_audio`` ..., sentence-stream's ``turn_id`` and the LLM turn's metadata)."""

    text: str
    language: str = ""
    voice: str = ""
    utterance_id: str = ""
    text_received_at: float | None = None
    options: RequestOptions = field(default_factory=RequestOptions)
    extra: dict[str, Any] = field(default_factory=dict)

    output_id: ClassVar[str] = TEXT

    def metadata(self) -> dict[str, Any]:
        md = dict(self.extra)
        md[UTTERANCE_ID] = self.utterance_id or new_utterance_id()
        if self.language:
            md[LANGUAGE] = self.language
        if self.voice:
            md[VOICE] = self.voice
        md[TEXT_RECEIVED_AT] = now() if self.text_received_at is None else float(self.text_received_at)
        return md | self.options.metadata()

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        return text_array(self.text), self.metadata()

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> TextRequest:
        text = read_text(value, TEXT)
        if not isinstance(md, Mapping):
            raise MessageError(f"port '{TEXT}': metadata is {type(md).__name__}, not a mapping")
        options = RequestOptions.from_metadata(md, TEXT)
        known = {UTTERANCE_ID, LANGUAGE, VOICE, TEXT_RECEIVED_AT, *options.metadata()}
        with decoding(TEXT):
            received = md.get(TEXT_RECEIVED_AT)
            return cls(
                text,
                language=str(md.get(LANGUAGE) or ""),
                voice=str(md.get(VOICE) or ""),
                utterance_id=str(md.get(UTTERANCE_ID) or ""),
                text_received_at=None if not received else float(received),
                options=options,
                extra={k: v for k, v in md.items() if k not in known},
            )


@dataclass
class SegmentKey:
    """Where a piece of work belongs: one segment of one utterance, spoken with one voice."""

    utterance_id: str
    segment_index: int
    utterance_final: bool
    voice: str = DEFAULT_VOICE
    text_received_at: float = 0.0
    options: RequestOptions = field(default_factory=RequestOptions)

    def metadata(self) -> dict[str, Any]:
        return {
            UTTERANCE_ID: self.utterance_id,
            SEGMENT_INDEX: self.segment_index,
            UTTERANCE_FINAL: self.utterance_final,
            VOICE: self.voice,
            TEXT_RECEIVED_AT: self.text_received_at,
        } | self.options.metadata()

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], port: str) -> SegmentKey:
        require(md, port, UTTERANCE_ID, SEGMENT_INDEX, UTTERANCE_FINAL)
        with decoding(port):
            return cls(
                utterance_id=str(md[UTTERANCE_ID]),
                segment_index=int(md[SEGMENT_INDEX]),
                utterance_final=bool(md[UTTERANCE_FINAL]),
                voice=str(md.get(VOICE, DEFAULT_VOICE)),
                text_received_at=float(md.get(TEXT_RECEIVED_AT, 0.0)),
                options=RequestOptions.from_metadata(md, port),
            )


@dataclass
class PhonemeSegment:
    """text-frontend -> bert: one sentence-sized segment as phone ids, prompt phones first."""

    key: SegmentKey
    phone_ids: np.ndarray  # int64 [T]
    n_prompt_phones: int
    run_languages: list[str]
    run_texts: list[str]
    run_phone_counts: list[int]
    word2ph: list[int]  # concatenated over Chinese runs, in run order
    segment_text: str = ""
    error: str = ""

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md = self.key.metadata() | {
            N_PROMPT_PHONES: self.n_prompt_phones,
            RUN_LANGUAGES: self.run_languages,
            RUN_TEXTS: self.run_texts,
            RUN_PHONE_COUNTS: self.run_phone_counts,
            WORD2PH: self.word2ph,
            SEGMENT_TEXT: self.segment_text,
        }
        if self.error:
            md[ERROR] = self.error
        return arrow_from_numpy(np.asarray(self.phone_ids, dtype=np.int64)), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> PhonemeSegment:
        require(md, PHONEMES, N_PROMPT_PHONES, RUN_LANGUAGES, RUN_TEXTS, RUN_PHONE_COUNTS)
        ids = numpy_view(value, np.int64, PHONEMES)
        with decoding(PHONEMES):
            msg = cls(
                key=SegmentKey.from_metadata(md, PHONEMES),
                phone_ids=ids,
                n_prompt_phones=int(md[N_PROMPT_PHONES]),
                run_languages=[str(s) for s in _items(md[RUN_LANGUAGES])],
                run_texts=[str(s) for s in _items(md[RUN_TEXTS])],
                run_phone_counts=[int(n) for n in _items(md[RUN_PHONE_COUNTS])],
                word2ph=[int(n) for n in _items(md.get(WORD2PH, []))],
                segment_text=str(md.get(SEGMENT_TEXT, "")),
                error=str(md.get(ERROR, "")),
            )
        if not msg.error and not (len(msg.run_languages) == len(msg.run_texts) == len(msg.run_phone_counts)):
            raise MessageError(f"port '{PHONEMES}': run_languages, run_texts and run_phone_counts differ in length")
        if not msg.error and sum(msg.run_phone_counts) != len(ids):
            raise MessageError(
                f"port '{PHONEMES}': run_phone_counts sum to {sum(msg.run_phone_counts)} "
                f"but {len(ids)} phone ids were sent"
            )
        return msg


@dataclass
class PhoneFeatures:
    """bert -> gpt: per-phone BERT features [1024, T] with the phone ids they belong to."""

    key: SegmentKey
    features: np.ndarray | torch.Tensor  # float32 [1024, T]
    phone_ids: list[int]
    n_prompt_phones: int
    error: str = ""

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        shape = [int(s) for s in self.features.shape]
        md = self.key.metadata() | {
            SHAPE: shape,
            PHONE_IDS: [int(i) for i in self.phone_ids],
            N_PROMPT_PHONES: self.n_prompt_phones,
        }
        if self.error:
            md[ERROR] = self.error
        return arrow_from_float32(self.features), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> PhoneFeatures:
        require(md, PHONE_FEATURES, SHAPE, PHONE_IDS, N_PROMPT_PHONES)
        flat = numpy_view(value, np.float32, PHONE_FEATURES)
        shape = tuple(read_shape(md, PHONE_FEATURES, flat.size))
        with decoding(PHONE_FEATURES):
            phone_ids = [int(i) for i in _items(md[PHONE_IDS])]
        if len(shape) != 2 or shape[0] != FEATURE_DIM:
            raise MessageError(f"port '{PHONE_FEATURES}': shape {list(shape)} is not [{FEATURE_DIM}, phones]")
        if shape[1] != len(phone_ids):
            raise MessageError(f"port '{PHONE_FEATURES}': {shape[1]} feature columns for {len(phone_ids)} phones")
        with decoding(PHONE_FEATURES):
            return cls(
                key=SegmentKey.from_metadata(md, PHONE_FEATURES),
                features=flat.reshape(shape),
                phone_ids=phone_ids,
                n_prompt_phones=int(md[N_PROMPT_PHONES]),
                error=str(md.get(ERROR, "")),
            )


@dataclass
class SemanticChunk:
    """gpt -> vocoder: consecutive semantic tokens of one segment, in decode order."""

    key: SegmentKey
    tokens: np.ndarray  # int64 [n]
    chunk_index: int
    segment_final: bool
    phone_ids: list[int]  # target phones of the segment (the vocoder's text input)
    error: str = ""
    prompt_phone_ids: list[int] = field(default_factory=list)  # the voice's prompt phones (v3/v4 vocoders)

    def joined(self, successor: SemanticChunk) -> SemanticChunk:
        """This chunk and the segment's next one as one chunk starting where this one starts (the
        vocoder decodes them in one run)."""
        return dataclasses.replace(
            self,
            tokens=np.concatenate([np.asarray(self.tokens), np.asarray(successor.tokens)]),
            segment_final=successor.segment_final,
        )

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md = self.key.metadata() | {
            CHUNK_INDEX: self.chunk_index,
            SEGMENT_FINAL: self.segment_final,
            PHONE_IDS: [int(i) for i in self.phone_ids],
        }
        if len(self.prompt_phone_ids):
            md[PROMPT_PHONE_IDS] = [int(i) for i in self.prompt_phone_ids]
        if self.error:
            md[ERROR] = self.error
        return arrow_from_numpy(np.asarray(self.tokens, dtype=np.int64)), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> SemanticChunk:
        require(md, SEMANTIC_TOKENS, CHUNK_INDEX, SEGMENT_FINAL, PHONE_IDS)
        tokens = numpy_view(value, np.int64, SEMANTIC_TOKENS)
        with decoding(SEMANTIC_TOKENS):
            return cls(
                key=SegmentKey.from_metadata(md, SEMANTIC_TOKENS),
                tokens=tokens,
                chunk_index=int(md[CHUNK_INDEX]),
                segment_final=bool(md[SEGMENT_FINAL]),
                phone_ids=[int(i) for i in _items(md[PHONE_IDS])],
                error=str(md.get(ERROR, "")),
                prompt_phone_ids=[int(i) for i in _items(md.get(PROMPT_PHONE_IDS, []))],
            )


@dataclass(frozen=True)
class TokenBacklog:
    """What already waits in the vocoder's queue (dora events) behind one segment's token chunk."""

    next_chunk: Mapping[str, Any] | None = None  # the event of the segment's next chunk, if it arrived
    other_utterances: bool = False  # chunks of other utterances wait too: the vocoder is the bottleneck
    segment_start_waits: bool = False  # one of them starts a segment: its first audio waits for our run

    @property
    def next_chunk_tokens(self) -> int:
        value = None if self.next_chunk is None else self.next_chunk.get("value")
        return 0 if value is None else len(value)

    @classmethod
    def of(cls, events: Iterable[Mapping[str, Any]], key: SegmentKey, chunk_index: int) -> TokenBacklog:
        """Anything malformed among ``events`` is left for the node to report when it gets there."""
        successor, others, start = None, False, False
        for event in events:
            md = event.get("metadata") or {}
            if event.get("type") != "INPUT" or event.get("id") != SEMANTIC_TOKENS or md.get(ERROR):
                continue
            if str(md.get(UTTERANCE_ID)) != key.utterance_id:
                others = others or bool(md.get(UTTERANCE_ID))
                start = start or md.get(CHUNK_INDEX) == 0
            elif md.get(SEGMENT_INDEX) == key.segment_index and md.get(CHUNK_INDEX) == chunk_index + 1:
                successor = event
        return cls(successor, others, start)


@dataclass
class AudioChunk:
    """vocoder -> sink: mono float32 samples; also the dora-kokoro-tts ``audio`` contract."""

    key: SegmentKey
    samples: np.ndarray | torch.Tensor  # float32 [n]
    sample_rate: int
    chunk_index: int
    segment_final: bool
    development_model: bool = False
    error: str = ""

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md = self.key.metadata() | {
            SAMPLE_RATE: int(self.sample_rate),
            CHUNK_INDEX: self.chunk_index,
            SEGMENT_FINAL: self.segment_final,
            DEVELOPMENT_MODEL: self.development_model,
        }
        if self.error:
            md[ERROR] = self.error
        return arrow_from_float32(self.samples), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> AudioChunk:
        require(md, AUDIO, SAMPLE_RATE)
        # Foreign producers (e.g. kokoro-style nodes) send no segment keys: treat as one utterance.
        key = SegmentKey.from_metadata(md, AUDIO) if UTTERANCE_ID in md else SegmentKey("external", 0, False)
        samples = numpy_view(value, np.float32, AUDIO)
        with decoding(AUDIO):
            sample_rate = int(md[SAMPLE_RATE])
            chunk = cls(
                key=key,
                samples=samples,
                sample_rate=sample_rate,
                chunk_index=int(md.get(CHUNK_INDEX, 0)),
                segment_final=bool(md.get(SEGMENT_FINAL, False)),
                development_model=bool(md.get(DEVELOPMENT_MODEL, False)),
                error=str(md.get(ERROR, "")),
            )
        if sample_rate <= 0:  # every consumer divides by it
            raise MessageError(f"port '{AUDIO}': sample_rate must be positive, got {sample_rate}")
        return chunk


@dataclass
class ReferencePart:
    """reference -> gpt/vocoder/frontend: one part of a voice (tokens, spectrogram, embedding, text)."""

    voice: str
    payload: np.ndarray | str
    shape: list[int] = field(default_factory=list)
    language: str = ""
    weights: str = ""  # the voice's own model file for the receiving stage; "" = the graph's

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md: dict[str, Any] = {VOICE: self.voice}
        if self.weights:
            md[WEIGHTS] = self.weights
        if isinstance(self.payload, str):
            md[LANGUAGE] = self.language
            return text_array(self.payload), md
        md[SHAPE] = self.shape or [int(s) for s in self.payload.shape]
        return arrow_from_numpy(self.payload), md

    @classmethod
    def tokens_from_event(cls, value: Any, md: Mapping[str, Any], port: str) -> ReferencePart:
        tokens = numpy_view(value, np.int64, port)
        with decoding(port):
            return cls(str(md.get(VOICE, DEFAULT_VOICE)), tokens, weights=str(md.get(WEIGHTS, "")))

    @classmethod
    def floats_from_event(cls, value: Any, md: Mapping[str, Any], port: str) -> ReferencePart:
        require(md, port, SHAPE)
        flat = numpy_view(value, np.float32, port)
        shape = read_shape(md, port, flat.size)
        with decoding(port):
            return cls(str(md.get(VOICE, DEFAULT_VOICE)), flat.reshape(shape), shape, weights=str(md.get(WEIGHTS, "")))

    @classmethod
    def text_from_event(cls, value: Any, md: Mapping[str, Any], port: str) -> ReferencePart:
        text = read_text(value, port)
        with decoding(port):
            return cls(str(md.get(VOICE, DEFAULT_VOICE)), text, language=str(md.get(LANGUAGE, "")))


@dataclass
class ControlCommand:
    """A barge-in: cancel every utterance whose text arrived before ``cancel_before``, or only
    ``utterance_id`` when one is named.

    On the frontend's ``control`` input anything goes: the word ``stop`` (optionally with
    ``utterance_id`` and its own ``cancel_before`` stamp), or any non-text message (e.g. dora-vad's
    ``timestamp_start``), which means "stop everything". The frontend re-emits it stamped.
    """

    cancel_before: float
    utterance_id: str = ""
    error: str = ""  # a stop that fails the named utterance: the sink reports it with this reason

    def cancels(self, key: SegmentKey) -> bool:
        if self.utterance_id:
            return key.utterance_id == self.utterance_id
        return key.text_received_at < self.cancel_before

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md: dict[str, Any] = {CANCEL_BEFORE: float(self.cancel_before)}
        if self.utterance_id:
            md[UTTERANCE_ID] = self.utterance_id
        if self.error:
            md[ERROR] = self.error
        return text_array(STOP), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any], stamp: float | None = None) -> ControlCommand:
        """Parse a control message; ``stamp`` is used when the message carries no ``cancel_before``."""
        is_text = isinstance(value, (pa.Array, pa.ChunkedArray)) and (
            pa.types.is_string(value.type) or pa.types.is_large_string(value.type)
        )
        if is_text:
            word = read_text(value, CONTROL).strip().lower()
            if word != STOP:
                raise MessageError(f"port '{CONTROL}': unknown command {word!r} (known: {STOP!r})")
        with decoding(CONTROL):
            if CANCEL_BEFORE in md:
                before = float(md[CANCEL_BEFORE])
            elif stamp is not None:
                before = stamp
            else:
                raise MessageError(f"port '{CONTROL}': missing metadata ['{CANCEL_BEFORE}']")
            # Only a real stop word may name one utterance; a foreign signal always stops everything.
            utterance = str(md.get(UTTERANCE_ID) or "") if is_text else ""
            error = str(md.get(ERROR) or "") if utterance else ""
        if math.isnan(before):  # compares false with every stamp: it would cancel nothing, silently
            raise MessageError(f"port '{CONTROL}': cancel_before is NaN")
        return cls(before, utterance, error)


@dataclass
class SegmentComplete:
    """sink -> text-frontend: one segment has left the graph (played, written, failed or cancelled)."""

    key: SegmentKey
    error: str = ""
    cancelled: bool = False

    def to_message(self) -> tuple[pa.Array, dict[str, Any]]:
        md = self.key.metadata()
        if self.error:
            md[ERROR] = self.error
        if self.cancelled:
            md[CANCELLED] = True
        return text_array("done"), md

    @classmethod
    def from_event(cls, value: Any, md: Mapping[str, Any]) -> SegmentComplete:
        read_text(value, SEGMENT_COMPLETE)
        key = SegmentKey.from_metadata(md, SEGMENT_COMPLETE)
        with decoding(SEGMENT_COMPLETE):
            return cls(key, str(md.get(ERROR, "")), bool(md.get(CANCELLED, False)))


# ---- restart markers ----------------------------------------------------------------------------
# dora tells only the direct consumers of a restarted node (a NODE_RESTARTED event). They pass the
# news down the data path as a marker: an empty payload of the port's type whose metadata names the
# node. Being in-band, it arrives behind everything sent before it, so a sink that sees it knows
# which utterances can no longer complete.
_EMPTY_TYPES = {"int64": pa.int64(), "float32": pa.float32(), "utf8": pa.string()}


def empty_array(payload: str) -> pa.Array:
    """An empty payload of a port's type ("int64", "float32", "utf8"): for markers and error replies."""
    return pa.array([], type=_EMPTY_TYPES[payload])


def restart_marker(node: str, payload: str, **metadata: Any) -> tuple[pa.Array, dict[str, Any]]:
    """An empty ``payload`` message announcing that ``node`` restarted."""
    return empty_array(payload), {RESTARTED: node, **metadata}


def restarted_node(metadata: Mapping[str, Any]) -> str | None:
    """The node a restart marker names, or None for an ordinary message."""
    node = metadata.get(RESTARTED)
    return str(node) if node else None


def restart_ready(metadata: Mapping[str, Any]) -> bool:
    """True on a marker that says the restarted node is serving again, False on one that says it
    went down. The node runtime sets it (``node_runtime.announce_restart``) and carries it along
    when a stage forwards the marker, so a consumer far downstream (the HTTP server) can tell when
    to take requests again."""
    return metadata.get(RESTART_READY) is True


def now() -> float:
    return time.time()
