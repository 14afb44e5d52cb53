"""Fuzz: whatever arrives on a port, its decoder returns a valid message or raises MessageError.

The node loop drops a message that raises MessageError with one log line and keeps serving; any
other exception would end the node (issue #15, class 1). Each port's decoder gets arbitrary Arrow
arrays (every flat type, nulls, chunked, sliced, strings that are not UTF-8, non-Arrow values) and
metadata that starts from a valid message's and has keys replaced by arbitrary values (huge and
non-finite numbers, lone surrogates, lists, nested dicts) or removed. The text-input node's line
parser, the other door into the graph, gets arbitrary lines and JSON. Bounded: a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.nodes.text_input import StopRequest, TextRequest, handle_line, parse_line

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = m.SegmentKey("u1", 0, True, "default", 12.5, m.RequestOptions(top_k=5, speed=1.0))

# ---- arbitrary values ---------------------------------------------------------------------------
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\ud83d", "\udc80x"])
TEXT = st.one_of(
    st.text(max_size=12), st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), SURROGATES, st.text(max_size=4))
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.builds(lambda e: 10**e, st.integers(19, 400)),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.binary(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
JSON_VALUES = st.recursive(  # what a JSON text can hold (json.dumps writes non-finite floats as NaN/Infinity)
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def invalid_utf8_strings(draw_bytes: bytes) -> pa.Array:
    """A Utf8 array whose bytes are not UTF-8: Arrow does not check buffers a producer hands it."""
    data = b"\xff" + draw_bytes
    offsets = np.array([0, len(data)], dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


ARRAYS = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6).map(lambda v: pa.array(v, pa.int32())),
    st.lists(st.floats(width=32), max_size=6).map(lambda v: pa.array(v, pa.float32())),
    st.lists(st.floats(), max_size=6).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=6).map(lambda v: pa.array(v, pa.int64())),  # nulls
    st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=6).map(lambda v: pa.array(v, pa.float32())),
    st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=3).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.text(max_size=6), max_size=3).map(lambda v: pa.array(v, pa.large_string())),
    st.lists(st.binary(max_size=6), max_size=3).map(lambda v: pa.array(v, pa.binary())),
    st.lists(st.booleans(), max_size=4).map(pa.array),
    st.lists(st.lists(st.floats(width=32), max_size=3), max_size=3).map(lambda v: pa.array(v, pa.list_(pa.float32()))),
    st.lists(st.text(max_size=4), min_size=1, max_size=3).map(lambda v: pa.chunked_array([pa.array(v, pa.string())])),
    st.lists(st.integers(0, 9), min_size=2, max_size=6).map(lambda v: pa.array(v, pa.int64()).slice(1)),  # offset
    st.binary(max_size=6).map(invalid_utf8_strings),
    st.just(pa.array([], pa.null())),
    st.one_of(st.none(), st.binary(max_size=4), st.integers(), st.text(max_size=4)),  # not Arrow at all
    st.lists(st.floats(width=32), max_size=4).map(lambda v: np.array(v, np.float32)),
)


# ---- each port: a valid message, and its decoder ----------------------------------------------------
def _valid(port: str) -> tuple[Any, dict[str, Any]]:
    ids = np.arange(4, dtype=np.int64)
    if port == m.PHONEMES:
        return m.PhonemeSegment(KEY, ids, 1, ["zh", "en"], ["你好", "hi"], [2, 2], [1, 1], "你好hi").to_message()
    if port == m.PHONE_FEATURES:
        return m.PhoneFeatures(KEY, np.zeros((m.FEATURE_DIM, 4), np.float32), ids.tolist(), 1).to_message()
    if port == m.SEMANTIC_TOKENS:
        return m.SemanticChunk(KEY, ids, 0, True, [1, 2]).to_message()
    if port == m.AUDIO:
        return m.AudioChunk(KEY, np.zeros(8, np.float32), 32000, 0, True).to_message()
    if port == m.PROMPT_SEMANTIC:
        return m.ReferencePart("default", ids).to_message()
    if port in (m.REFERENCE_SPECTROGRAM, m.SPEAKER_EMBEDDING):
        return m.ReferencePart("default", np.zeros((3, 2), np.float32)).to_message()
    if port == m.VOICE_PROMPT:
        return m.ReferencePart("default", "参考。", language="zh").to_message()
    if port == m.CONTROL:
        return m.ControlCommand(10.0, "u1").to_message()
    if port == m.SEGMENT_COMPLETE:
        return m.SegmentComplete(KEY, "boom").to_message()
    return m.text_array("你好。"), KEY.metadata()  # text


DECODERS: dict[str, tuple[Callable[[Any, dict], Any], type]] = {
    m.TEXT: (lambda v, md: m.read_text(v, m.TEXT), str),
    m.PHONEMES: (m.PhonemeSegment.from_event, m.PhonemeSegment),
    m.PHONE_FEATURES: (m.PhoneFeatures.from_event, m.PhoneFeatures),
    m.SEMANTIC_TOKENS: (m.SemanticChunk.from_event, m.SemanticChunk),
    m.AUDIO: (m.AudioChunk.from_event, m.AudioChunk),
    m.PROMPT_SEMANTIC: (lambda v, md: m.ReferencePart.tokens_from_event(v, md, m.PROMPT_SEMANTIC), m.ReferencePart),
    m.REFERENCE_SPECTROGRAM: (
        lambda v, md: m.ReferencePart.floats_from_event(v, md, m.REFERENCE_SPECTROGRAM),
        m.ReferencePart,
    ),
    m.SPEAKER_EMBEDDING: (lambda v, md: m.ReferencePart.floats_from_event(v, md, m.SPEAKER_EMBEDDING), m.ReferencePart),
    m.VOICE_PROMPT: (lambda v, md: m.ReferencePart.text_from_event(v, md, m.VOICE_PROMPT), m.ReferencePart),
    m.CONTROL: (lambda v, md: m.ControlCommand.from_event(v, md, stamp=None), m.ControlCommand),
    m.SEGMENT_COMPLETE: (m.SegmentComplete.from_event, m.SegmentComplete),
}
ALL_KEYS = sorted({k for port in DECODERS for k in _valid(port)[1]} | {m.SHAPE, m.RESTARTED, m.RESTART_READY, "x"})


@st.composite
def port_messages(draw, port: str) -> tuple[Any, dict[str, Any]]:
    """A valid message of ``port`` with its payload and some metadata replaced or removed."""
    value, md = _valid(port)
    md = dict(md)
    if draw(st.booleans()):
        value = draw(ARRAYS)
    for key in draw(st.lists(st.sampled_from(ALL_KEYS), max_size=4, unique=True)):
        if key in md and draw(st.booleans()):
            del md[key]
        else:
            md[key] = draw(VALUES)
    return value, md


def test_every_decoder_accepts_its_valid_message():
    """The baseline the fuzzing mutates: without it, every example could fail for one reason."""
    for port, (decode, kind) in DECODERS.items():
        assert isinstance(decode(*_valid(port)), kind), port


@pytest.mark.parametrize("port", sorted(DECODERS))
def test_a_decoder_returns_a_valid_message_or_raises_message_error(port):
    decode, kind = DECODERS[port]

    @SETTINGS
    @given(port_messages(port))
    def check(message):
        value, md = message
        try:
            decoded = decode(value, md)
        except m.MessageError:
            return
        assert isinstance(decoded, kind)
        if isinstance(decoded, m.AudioChunk):
            assert decoded.sample_rate > 0  # every consumer divides by it
        if isinstance(decoded, m.ReferencePart) and not isinstance(decoded.payload, str):
            assert list(decoded.payload.shape) == decoded.shape or port == m.PROMPT_SEMANTIC

    check()


@SETTINGS
@given(st.dictionaries(st.sampled_from(ALL_KEYS), VALUES, max_size=6))
def test_metadata_helpers_never_raise_anything_but_message_error(md):
    assert m.restarted_node(md) is None or isinstance(m.restarted_node(md), str)
    assert m.restart_ready(md) in (True, False)
    for parse in (lambda: m.SegmentKey.from_metadata(md, "p"), lambda: m.RequestOptions.from_metadata(md, "p")):
        try:
            parse()
        except m.MessageError:
            pass


# ---- text-input's lines ------------------------------------------------------------------------------
class Sink:
    def __init__(self):
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []

    def send_output(self, output_id: str, data: Any, metadata: dict[str, Any]) -> None:
        data.validate(full=True)  # what reaches dora is valid UTF-8 Arrow
        for value in metadata.values():
            if isinstance(value, str):
                value.encode("utf-8")  # as dora encodes metadata strings
        self.sent.append((output_id, data, metadata))


REQUEST_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(TEXT, JSON_VALUES),
        "language": st.one_of(TEXT, JSON_VALUES),
        "voice": st.one_of(TEXT, JSON_VALUES),
        "utterance_id": st.one_of(TEXT, JSON_VALUES),
        "control": st.one_of(st.just("stop"), JSON_VALUES),
    },
)
LINES = st.one_of(
    TEXT,
    st.text(max_size=30),
    REQUEST_FIELDS.map(json.dumps),  # json.dumps writes a lone surrogate as \ud800: valid JSON
    JSON_VALUES.map(lambda v: json.dumps({"text": "hi", "extra": v})),
    st.integers(1, 3000).map(lambda depth: "{" + '"a":[' * depth + "1" + "]" * depth + "}"),
    st.integers(4301, 6000).map(lambda digits: '{"text": "hi", "utterance_id": ' + "7" * digits + "}"),
)


@SETTINGS
@given(LINES)
def test_text_input_turns_any_line_into_a_request_or_a_refusal_and_never_raises(line):
    sink = Sink()
    try:
        parsed = parse_line(line, "auto", "default")
    except ValueError:  # MessageError included: refused with a log line by handle_line
        parsed = None
    assert parsed is None or isinstance(parsed, (TextRequest, StopRequest))
    sent = handle_line(sink, line, "auto", "default")  # must not raise, whatever the line
    assert sent == (parsed is not None) == bool(sink.sent)


def test_the_reported_lone_surrogate_is_refused_and_the_next_line_is_served(caplog):
    sink = Sink()
    assert not handle_line(sink, '{"text": "\\ud800 hello"}', "auto", "default")
    assert not handle_line(sink, '{"text": "hi", "utterance_id": "\\udfff"}', "auto", "default")
    assert handle_line(sink, '{"text": "hello"}', "auto", "default")
    assert [m.read_text(d) for _, d, _ in sink.sent] == ["hello"]
    assert "lone surrogate (U+D800)" in caplog.text and "lone surrogate (U+DFFF)" in caplog.text
