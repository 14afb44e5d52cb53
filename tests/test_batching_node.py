"""The gpt node's continuous batching (GPTStage with BatchedDecode) through the shared event loop:
segments of several utterances decode together, joining as they arrive, and every segment streams
the chunks it streams alone — the same tokens, in order, a later segment of an utterance only after
the earlier one ended; a stop removes its utterance's rows at once; a failing segment fails alone.

The tiny fixture model through the module path; dora is a recording node whose ``next(timeout)``
times out (as dora's does) until an event's moment comes.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FIXTURES, RecordingNode, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.gpt.decoder import stream
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.module_decoder import ModuleDecoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.node_runtime import serve
from dora_gpt_sovits.nodes.gpt_decoder import BatchedDecode, ChunkPolicy, GPTStage
from dora_gpt_sovits.settings import GPTSettings

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest

BASE = SamplingParams(top_k=15, early_stop_num=40)
SEED = 11
POLICY = ChunkPolicy(first_chunk_tokens=4, chunk_tokens=10, growth=2.0)


@pytest.fixture(scope="module")
def decoder():
    return ModuleDecoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"))


@pytest.fixture(scope="module")
def fixture_inputs():
    expected = np.load(FIXTURES / "expected.npz")
    return tuple(expected[f"gpt_v2_tiny_{k}"] for k in ("phone_ids", "bert", "prompt_semantic"))


class Arrivals(RecordingNode):
    """Each event arrives once ``after`` messages were sent; until then ``next(timeout)`` times out."""

    def __init__(self, schedule: list[tuple[int, dict[str, Any]]]):
        super().__init__([])
        self.schedule = deque(schedule)

    def due(self) -> bool:
        return bool(self.schedule) and len(self.sent) >= self.schedule[0][0]

    def next(self, timeout: float | None = None):
        if self.due() or (self.schedule and timeout is None):
            return self.schedule.popleft()[1]
        if self.schedule:
            return {"type": "ERROR", "error": "Receiver timed out"}
        return super().next(timeout)  # the end: dora's STOP

    def try_recv(self):
        return self.schedule.popleft()[1] if self.due() else None


def segment(inputs, utt: str, index: int, cut: tuple[int, int], final: bool = False):
    phones, bert, _ = inputs
    key = m.SegmentKey(utt, index, final, "default", 100.0)
    return m.PhoneFeatures(key, torch.from_numpy(bert[:, cut[0] : cut[1]]), phones[cut[0] : cut[1]].tolist(), 2)


def alone(decoder, inputs, seg: m.PhoneFeatures) -> list[int]:
    prompt = inputs[2]
    params = dataclasses.replace(BASE, seed=SEED + seg.key.segment_index)
    return list(stream(decoder, np.asarray(seg.phone_ids), seg.features, prompt, params))


def run(decoder, inputs, schedule, max_rows=4, ahead=0) -> tuple[list[m.SemanticChunk], Arrivals]:
    prompt = m.ReferencePart("default", inputs[2]).to_message()
    node = Arrivals([(0, input_event(m.PROMPT_SEMANTIC, *prompt)), *schedule])
    batch = BatchedDecode(lambda weights: decoder, BASE, max_rows, ahead, POLICY.first_chunk_tokens)
    stage = node.stage = GPTStage(None, POLICY, SEED, batch)
    serve(node, stage)
    return [m.SemanticChunk.from_event(d, md) for d, md in node.outputs(m.SEMANTIC_TOKENS)], node


def by_segment(chunks) -> dict[tuple[str, int], list[m.SemanticChunk]]:
    out: dict[tuple[str, int], list[m.SemanticChunk]] = {}
    for c in chunks:
        out.setdefault((c.key.utterance_id, c.key.segment_index), []).append(c)
    return out


def test_concurrent_utterances_stream_what_each_streams_alone(decoder, fixture_inputs):
    segs = [
        segment(fixture_inputs, "a", 0, (0, 40)),
        segment(fixture_inputs, "a", 1, (20, 70), final=True),
        segment(fixture_inputs, "b", 0, (5, 35), final=True),
        segment(fixture_inputs, "c", 0, (10, 60)),
        segment(fixture_inputs, "c", 1, (0, 25), final=True),
    ]
    # a's two segments first, b after a's first chunks, c's while a and b decode.
    arrivals = [0, 0, 2, 4, 4]
    chunks, _ = run(
        decoder, fixture_inputs, [(n, input_event(m.PHONE_FEATURES, *s.to_message())) for n, s in zip(arrivals, segs)]
    )
    got = by_segment(chunks)
    for s in segs:
        mine = got[(s.key.utterance_id, s.key.segment_index)]
        assert np.concatenate([c.tokens for c in mine]).tolist() == alone(decoder, fixture_inputs, s)
        assert [c.chunk_index for c in mine] == list(range(len(mine)))
        assert [c.segment_final for c in mine] == [False] * (len(mine) - 1) + [True]
    keys = [(c.key.utterance_id, c.key.segment_index, c.segment_final) for c in chunks]
    for utt in ("a", "c"):  # an utterance's next segment starts after its previous one ended
        assert keys.index((utt, 0, True)) < min(i for i, k in enumerate(keys) if k[:2] == (utt, 1))
    first_b = min(i for i, k in enumerate(keys) if k[0] == "b")
    assert first_b < keys.index(("a", 0, True))  # b joined while a was decoding


def test_a_stop_removes_its_utterance_at_once_and_the_others_go_on(decoder, fixture_inputs):
    segs = [segment(fixture_inputs, u, 0, (0, 50), final=True) for u in ("a", "b", "c")]
    stop = m.ControlCommand(150.0, "b").to_message()  # a named stop: only b (received at 100)
    schedule = [(0, input_event(m.PHONE_FEATURES, *s.to_message())) for s in segs]
    schedule.append((6, input_event(m.CONTROL, *stop)))
    chunks, node = run(decoder, fixture_inputs, schedule)
    got = by_segment(chunks)
    assert got[("b", 0)] and not any(c.segment_final for c in got[("b", 0)])  # cut off mid-segment
    for u, s in zip("ac", (segs[0], segs[2])):
        assert np.concatenate([c.tokens for c in got[(u, 0)]]).tolist() == alone(decoder, fixture_inputs, s)
        assert got[(u, 0)][-1].segment_final


def test_a_segment_that_fails_closes_with_its_error_and_the_others_decode(decoder, fixture_inputs):
    good = segment(fixture_inputs, "a", 0, (0, 40), final=True)
    bad = segment(fixture_inputs, "b", 0, (0, 40), final=True)
    bad.phone_ids = [100_000] * len(bad.phone_ids)  # outside the phone vocabulary
    schedule = [(0, input_event(m.PHONE_FEATURES, *s.to_message())) for s in (good, bad)]
    got = by_segment(run(decoder, fixture_inputs, schedule)[0])
    (failed,) = got[("b", 0)]
    assert failed.segment_final and "GPT decoding failed" in failed.error
    assert np.concatenate([c.tokens for c in got[("a", 0)]]).tolist() == alone(decoder, fixture_inputs, good)


def test_the_batch_cap_is_a_setting():
    assert GPTSettings.from_env({}).max_batch == 1  # off: one listener's sink needs utterances in order
    assert GPTSettings.from_env({"GSV_MAX_BATCH": "4"}).max_batch == 4
    with pytest.raises(ValueError, match="GSV_MAX_BATCH"):
        GPTSettings.from_env({"GSV_MAX_BATCH": "0"})


def features_events(segs, arrivals):
    return [(n, input_event(m.PHONE_FEATURES, *s.to_message())) for n, s in zip(arrivals, segs)]


def chunk_messages(chunks) -> list[tuple]:
    return [
        (c.key.utterance_id, c.key.segment_index, c.chunk_index, c.segment_final, c.tokens.tolist()) for c in chunks
    ]


@pytest.mark.parametrize("max_rows", [1, 4])
def test_segments_decoded_ahead_send_the_chunks_they_send_in_turn_in_order(decoder, fixture_inputs, max_rows, caplog):
    segs = [
        segment(fixture_inputs, "a", 0, (0, 40)),
        segment(fixture_inputs, "a", 1, (20, 70)),
        segment(fixture_inputs, "a", 2, (5, 35), final=True),
        segment(fixture_inputs, "b", 0, (10, 60)),
        segment(fixture_inputs, "b", 1, (0, 25), final=True),
    ]
    schedule = features_events(segs, [0, 0, 0, 3, 3])
    plain, _ = run(decoder, fixture_inputs, schedule, max_rows=max_rows)
    assert "decoded ahead" not in caplog.text
    with caplog.at_level("INFO", logger="gsv.gpt"):
        ahead, _ = run(decoder, fixture_inputs, schedule, max_rows=max_rows, ahead=1)
    assert "utterance a segment 1: " in caplog.text and "decoded ahead" in caplog.text
    for utt in "ab":  # each utterance: the same messages in the same order
        assert [c for c in chunk_messages(ahead) if c[0] == utt] == [c for c in chunk_messages(plain) if c[0] == utt]
    if max_rows == 1:  # one utterance at a time, as consumers that play in arrival order need
        assert chunk_messages(ahead) == chunk_messages(plain)
    a_ends = [i for i, c in enumerate(chunk_messages(ahead)) if c[0] == "a" and c[3]]
    a_starts = [min(i for i, c in enumerate(chunk_messages(ahead)) if c[:2] == ("a", k)) for k in (1, 2)]
    assert a_ends[0] < a_starts[0] and a_ends[1] < a_starts[1]


def test_a_failed_segment_waits_for_the_segments_before_it(decoder, fixture_inputs):
    segs = [segment(fixture_inputs, "a", 0, (0, 40)), segment(fixture_inputs, "a", 1, (0, 40), final=True)]
    segs[1].error = "bert failed on this segment"
    chunks, _ = run(decoder, fixture_inputs, features_events(segs, [0, 2]), ahead=1)
    keys = [(c.key.segment_index, c.segment_final, c.error) for c in chunks]
    assert keys[-1] == (1, True, "bert failed on this segment") and keys[-2][:2] == (0, True)


def test_a_stop_drops_the_chunks_held_for_a_segment_decoded_ahead(decoder, fixture_inputs):
    segs = [
        segment(fixture_inputs, "a", 0, (0, 60)),
        segment(fixture_inputs, "a", 1, (0, 60), final=True),
        segment(fixture_inputs, "b", 0, (5, 35), final=True),
    ]
    stop = m.ControlCommand(150.0, "a").to_message()
    schedule = [*features_events(segs[:2], [0, 0]), (3, input_event(m.CONTROL, *stop))]
    schedule.append((3, input_event(m.PHONE_FEATURES, *segs[2].to_message())))
    chunks, node = run(decoder, fixture_inputs, schedule, ahead=1)
    order = node.stage.order
    assert not order.held and not order.ended and not order.open  # nothing kept for "a"
    got = by_segment(chunks)
    assert ("a", 1) not in got and not any(c.segment_final for c in got[("a", 0)])
    assert np.concatenate([c.tokens for c in got[("b", 0)]]).tolist() == alone(decoder, fixture_inputs, segs[2])


def test_decoding_ahead_is_a_setting():
    assert GPTSettings.from_env({}).decode_ahead == 0
    assert GPTSettings.from_env({"GSV_DECODE_AHEAD": "1"}).decode_ahead == 1
    with pytest.raises(ValueError, match="GSV_DECODE_AHEAD"):
        GPTSettings.from_env({"GSV_DECODE_AHEAD": "-1"})
