"""pyaudio-feed (nodes/pyaudio_feed.py): our audio on its way to dora-pyaudio, emptied at a barge-in.

The real dora-pyaudio behind it is driven by tests/test_voice_assistant_hub_e2e.py; here the stage's
messages themselves: what passes, what is dropped, and the flush marker's exact form (dora reads
`flush` as a bool; dora-pyaudio calls `to_numpy()` and opens its stream at the first message's rate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import RecordingNode, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import serve
from dora_gpt_sovits.nodes.pyaudio_feed import PyaudioFeedStage

RATE = 24000
STOP_AT = 100.0
OLD, NEW = STOP_AT - 1.0, STOP_AT + 1.0  # texts received before / after the stop


def audio(utterance: str, received: float, samples: int = 2400, index: int = 0) -> tuple[pa.Array, dict[str, Any]]:
    key = m.SegmentKey(utterance, 0, True, text_received_at=received)
    return m.AudioChunk(key, np.full(samples, 0.1, np.float32), RATE, index, False).to_message()


def stop(utterance: str = "") -> tuple[pa.Array, dict[str, Any]]:
    return m.ControlCommand(STOP_AT, utterance).to_message()


def run(stage: PyaudioFeedStage, *events: tuple[str, tuple[pa.Array, dict[str, Any]]]) -> list:
    out = []
    for port, (value, metadata) in events:
        out += list(stage.handle(port, value, metadata))
    return out


def test_audio_passes_unchanged():
    value, metadata = audio("a", OLD)
    (out,) = run(PyaudioFeedStage(), (m.AUDIO, (value, metadata)))
    assert (out.output_id, out.data, out.metadata) == (m.AUDIO, value, metadata)


def test_a_stop_all_sends_one_empty_flush_marker_at_the_streams_rate():
    stage = PyaudioFeedStage()
    out = run(stage, (m.AUDIO, audio("a", OLD)), (m.AUDIO, audio("a", OLD, index=1)), (m.CONTROL, stop()))
    marker = out[-1]
    assert marker.output_id == m.AUDIO and marker.data.type == pa.float32()
    assert marker.data.to_numpy().size == 0  # dora-pyaudio's read: an empty buffer, nothing more to play
    assert marker.metadata == {m.SAMPLE_RATE: RATE, m.FLUSH: True} and marker.metadata[m.FLUSH] is True
    # dora-vad repeats timestamp_start while the user speaks: nothing new was queued, so no more markers.
    assert run(stage, (m.CONTROL, stop()), (m.CONTROL, stop())) == []


def test_dora_vads_own_signal_is_a_stop_all_stamped_on_arrival():
    stage = PyaudioFeedStage(clock=lambda: STOP_AT)
    out = run(stage, (m.AUDIO, audio("a", OLD)), (m.CONTROL, (pa.array([16000], pa.int64()), {})))
    assert out[-1].metadata[m.FLUSH] is True
    later = run(stage, (m.AUDIO, audio("a", OLD, index=1)), (m.AUDIO, audio("b", NEW)))
    assert [o.metadata[m.UTTERANCE_ID] for o in later] == ["b"]


def test_nothing_to_flush_before_any_audio():
    assert run(PyaudioFeedStage(), (m.CONTROL, stop())) == []


def test_stopped_audio_still_on_its_way_is_dropped_and_the_next_answer_passes():
    stage = PyaudioFeedStage()
    out = run(
        stage,
        (m.AUDIO, audio("old", OLD)),
        (m.CONTROL, stop()),
        (m.AUDIO, audio("old", OLD, index=1)),  # the vocoder sent it before it saw the stop
        (m.AUDIO, audio("new", NEW)),
    )
    assert [o.metadata.get(m.UTTERANCE_ID, "marker") for o in out] == ["old", "marker", "new"]


def test_a_named_stop_drops_only_that_utterance_and_flushes_nothing():
    stage = PyaudioFeedStage()
    out = run(
        stage,
        (m.AUDIO, audio("a", OLD)),
        (m.AUDIO, audio("b", OLD)),
        (m.CONTROL, stop("a")),  # dora's flush would drop b's queued audio too
        (m.AUDIO, audio("a", OLD, index=1)),
        (m.AUDIO, audio("b", OLD, index=1)),
    )
    assert [(o.metadata[m.UTTERANCE_ID], o.metadata[m.CHUNK_INDEX]) for o in out] == [("a", 0), ("b", 0), ("b", 1)]


def test_audio_of_another_producer_passes_after_a_stop():
    stage = PyaudioFeedStage()
    foreign = (pa.array(np.zeros(100, np.float32)), {m.SAMPLE_RATE: RATE})  # kokoro-style: rate only
    out = run(stage, (m.AUDIO, foreign), (m.CONTROL, stop()), (m.AUDIO, foreign))
    assert [bool(o.metadata.get(m.FLUSH)) for o in out] == [False, True, False]


def test_audio_without_a_rate_is_refused_with_the_reason():
    with pytest.raises(m.MessageError, match="sample_rate"):
        run(PyaudioFeedStage(), (m.AUDIO, (pa.array(np.zeros(10, np.float32)), {})))


def test_the_node_runtime_delivers_the_stop_between_audio_messages():
    events = [
        input_event(m.AUDIO, *audio("old", OLD)),
        input_event(m.CONTROL, *stop()),
        input_event(m.AUDIO, *audio("old", OLD, index=1)),
        input_event(m.AUDIO, *audio("new", NEW)),
    ]
    node = RecordingNode(events)
    serve(node, PyaudioFeedStage())
    sent = node.outputs(m.AUDIO)
    assert [(len(d), md.get(m.UTTERANCE_ID), md.get(m.FLUSH)) for d, md in sent] == [
        (2400, "old", None),
        (0, None, True),
        (2400, "new", None),
    ]
