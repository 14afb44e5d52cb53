"""The reliability matrix (docs/reliability.md), at the level the user meets it.

Every bad input and every fault ends either in complete audio or in a clear error that reaches the
sink's metrics; no stage hangs or stops serving. Stages are chained here with stand-in models
(real text frontend, real reference-audio checks), so each row runs in milliseconds; the real
`dora` runs (node killed and restarted, Ctrl-C) are in tests/test_reliability_e2e.py.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from conftest import RecordingNode, input_event

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import Loop, Outgoing, inputs_fed_by, serve
from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.nodes.gpt_decoder import GPTStage
from dora_gpt_sovits.nodes.reference import ReferenceStage, VoiceFeatures
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.voices import Voice

SR = 32000
TOKENS_PER_PHONE = 2  # the stand-in GPT: audio length follows the text


def fake_decode(phone_ids, features, prompt, seed, options):
    yield from range(TOKENS_PER_PHONE * (len(phone_ids)))


def fake_make_decoder(cond, phone_ids, seed, speed):
    def decode(history, run, lookahead, position):
        return torch.full((len(run) * 640,), 0.1), torch.zeros(0)

    return decode


def fake_features(voice: Voice) -> VoiceFeatures:
    from dora_gpt_sovits.audio.reference_audio import load_reference

    load_reference(voice.ref_audio)  # the real checks: missing, unreadable, silent, too short/long...
    return VoiceFeatures(np.arange(20), np.ones((1025, 30), np.float32), None)


def write_voice(path: Path, seconds: float = 4.0, rate: int = 32000, channels: int = 1, peak: float = 0.5) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wav = (peak * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    sf.write(path, np.stack([wav] * channels, axis=1) if channels > 1 else wav, rate)
    return path


# Which node's output feeds which node's input, as in dataflow.yml.
WIRES = {
    ("text-frontend", m.PHONEMES): [("bert", m.PHONEMES)],
    ("text-frontend", m.VOICE_REQUEST): [("reference", m.VOICE_REQUEST)],
    ("reference", m.VOICE_PROMPT): [("text-frontend", m.VOICE_PROMPT)],
    ("reference", m.PROMPT_SEMANTIC): [("gpt", m.PROMPT_SEMANTIC)],
    ("reference", m.REFERENCE_SPECTROGRAM): [("vocoder", m.REFERENCE_SPECTROGRAM)],
    ("reference", m.SPEAKER_EMBEDDING): [("vocoder", m.SPEAKER_EMBEDDING)],
    ("bert", m.PHONE_FEATURES): [("gpt", m.PHONE_FEATURES)],
    ("gpt", m.SEMANTIC_TOKENS): [("vocoder", m.SEMANTIC_TOKENS)],
    ("gpt", m.VOICE_REQUEST): [("reference", m.GPT_VOICE_REQUEST)],
    ("vocoder", m.AUDIO): [("audio-sink", m.AUDIO)],
    ("vocoder", m.VOICE_REQUEST): [("reference", m.VOCODER_VOICE_REQUEST)],
    ("audio-sink", m.SEGMENT_COMPLETE): [("text-frontend", m.SEGMENT_COMPLETE)],
}


class Graph:
    """The stages of dataflow.yml wired in-process, messages delivered in order through the wires."""

    def __init__(self, tmp_path: Path, voices: dict[str, Voice] | None = None):
        default = write_voice(tmp_path / "default.wav")
        registry = {"default": Voice("default", default, "你好。", "zh")} | (voices or {})
        self.stages: dict[str, Any] = {
            "text-frontend": TextFrontendStage(max_segments_ahead=3),  # the service graph's window
            "reference": ReferenceStage(registry, fake_features, lambda v: str(v.ref_audio)),
            "bert": BertStage(lambda text, word2ph: torch.zeros(m.FEATURE_DIM, sum(word2ph))),
            "gpt": GPTStage(fake_decode),
            "vocoder": VocoderStage(lambda spec, sv: "cond", fake_make_decoder, SR, needs_speaker_embedding=False),
            "audio-sink": AudioSinkStage("null"),
        }
        self.queue: deque[tuple[str, str, Any, dict[str, Any]]] = deque()
        self.metrics: list[dict[str, Any]] = []
        self.slow_sink: list[tuple[Any, dict[str, Any]]] | None = None  # segment_complete held back here
        self.segments_sent = 0
        self.down: str | None = None
        self.send("reference", self.stages["reference"].start())
        self.run()

    def send(self, node: str, outgoing) -> None:
        for o in outgoing:
            if (node, o.output_id) == ("audio-sink", m.METRICS):
                self.metrics.append(json.loads(m.read_text(o.data)))
            if (node, o.output_id) == ("text-frontend", m.PHONEMES):
                self.segments_sent += 1
            if (node, o.output_id) == ("audio-sink", m.SEGMENT_COMPLETE) and self.slow_sink is not None:
                self.slow_sink.append((o.data, dict(o.metadata)))  # not yet played
                continue
            for target, input_id in WIRES.get((node, o.output_id), []):
                self.queue.append((target, input_id, o.data, dict(o.metadata)))

    def run(self) -> None:
        while self.queue:
            target, input_id, data, metadata = self.queue.popleft()
            if target != self.down:  # dora drops what is sent to a node while it is down
                self.deliver(target, input_id, data, metadata)

    def deliver(self, target: str, input_id: str, data: Any, metadata: dict[str, Any]) -> None:
        node = RecordingNode([])
        try:
            Loop(node, self.stages[target]).dispatch(
                {"type": "INPUT", "id": input_id, "value": data, "metadata": metadata}
            )
        finally:  # what a dying process sent before it died is on its way
            self.send(target, [Outgoing(o, d, md) for o, d, md in node.sent])

    def say(self, text: Any, **metadata: Any) -> dict[str, Any] | None:
        """Put one text in at the frontend; the sink's report of it (None if it reported nothing)."""
        before = len(self.metrics)
        data = text if isinstance(text, pa.Array) else m.text_array(text)
        self.queue.append(("text-frontend", m.TEXT, data, {m.UTTERANCE_ID: f"u{before}"} | metadata))
        self.run()
        return self.metrics[before] if len(self.metrics) > before else None

    def restart(self, node: str, stage: Any, downtime=lambda: None) -> None:
        """dora restarts ``node``: its queue is gone and what it sent arrives; its consumers get
        NODE_RESTARTED while it loads (``downtime``: what happens meanwhile is sent into the void);
        then the fresh stage starts and, as serve() does, announces that it is back."""
        self.queue = deque(q for q in self.queue if q[0] != node)
        self.run()
        self.down = node
        consumers = {target for (src, _), targets in WIRES.items() if src == node for target, _ in targets}
        for consumer in sorted(consumers):
            inputs = frozenset(
                i for (src, _), targets in WIRES.items() if src == node for t, i in targets if t == consumer
            )
            self.send(consumer, self.stages[consumer].upstream_restarted(node, inputs))
        self.run()
        downtime()
        self.down = None
        self.stages[node] = stage
        self.send(node, stage.start())
        self.send(node, stage.upstream_restarted(node, None))
        self.run()


@pytest.fixture
def graph(tmp_path) -> Graph:
    return Graph(tmp_path)


def assert_spoken(report: dict[str, Any]) -> None:
    assert report["errors"] == [] and report["audio_s"] > 0.3, report


# ---- bad text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   \n\t ", "<tool_call>{}</tool_call>"])
def test_empty_text_is_skipped_with_a_log_line(graph, caplog, text):
    # As dora-kokoro-tts: an LLM turn with nothing to say is not an utterance (the HTTP server
    # refuses empty input with a 400 before it enters the graph; text-input skips empty lines).
    with caplog.at_level(logging.INFO):
        assert graph.say(text) is None
    assert "nothing to speak" in caplog.text
    assert_spoken(graph.say("你好，世界。"))


@pytest.mark.parametrize(
    "text, language, expected",
    [
        ("？！。……", "zh", "nothing"),
        ("...!!!", "en", "nothing"),
        ("😀🎉👍", "auto", "nothing"),
        ("\x00\x07\x1b\x7f\u200b", "auto", "nothing"),
        ("「」、。", "ja", "nothing"),
        ("こんにちは", "jp", "unknown language"),
        ("hello", "xx", "unknown language"),
    ],
)
def test_unspeakable_text_ends_as_an_error_at_the_sink(graph, text, language, expected):
    report = graph.say(text, **{m.LANGUAGE: language})
    assert report is not None, "the utterance vanished"
    assert report["audio_s"] == 0 and any(expected in e for e in report["errors"]), report
    assert_spoken(graph.say("你好，世界。"))  # and the graph keeps serving


@pytest.mark.parametrize(
    "text",
    [
        "你好😀，世界🎉。",  # emoji among words are skipped
        "你好\x07世界\x00。\tHello\r\nworld.",  # control characters
        "今天是 Monday，我们 meet at 3 点。",  # mixed scripts
        "Ünïcödé façade, naïve café.",
    ],
)
def test_odd_but_speakable_text_is_spoken(graph, text):
    assert_spoken(graph.say(text))


def test_a_100k_character_text_streams_segment_by_segment():
    """The frontend converts and sends one sentence at a time (the node sends each as it is made)
    instead of converting the whole text first; the full 100,000 characters are timed by
    scripts/soak.py --long-text."""
    import time

    stage = TextFrontendStage()
    list(stage.handle(m.VOICE_PROMPT, *m.ReferencePart("default", "你好。", language="zh").to_message()))
    text = ("今天天气很好，我们去公园散步吧。" * 2000 + "Hello there, this is a long text. " * 2000)[:100_000]
    started = time.perf_counter()
    stream = stage.handle(m.TEXT, m.text_array(text), {m.UTTERANCE_ID: "long"})
    first = [next(stream) for _ in range(3)]
    assert time.perf_counter() - started < 10  # a whole-text conversion takes ~30 s on this machine
    segments = [m.PhonemeSegment.from_event(o.data, o.metadata) for o in first]
    assert [s.key.segment_index for s in segments] == [0, 1, 2]
    assert all(not s.key.utterance_final and len(s.phone_ids) < 400 for s in segments)


# ---- wrong Arrow types and missing metadata on every port -------------------------------------------
def bad_messages():
    key = m.SegmentKey("u", 0, True).metadata()
    return [
        ("text-frontend", m.TEXT, pa.array([1, 2], pa.int64()), {}),
        ("text-frontend", m.TEXT, pa.array([], pa.string()), {}),
        ("text-frontend", m.TEXT, pa.array([None], pa.string()), {}),
        ("text-frontend", m.VOICE_PROMPT, pa.array([1.0], pa.float32()), {m.VOICE: "default"}),
        ("bert", m.PHONEMES, pa.array(["a"]), key),
        ("bert", m.PHONEMES, pa.array([1, 2], pa.int64()), {}),  # no metadata at all
        ("gpt", m.PHONE_FEATURES, pa.array([[1.0]], pa.list_(pa.float32())), key),
        ("gpt", m.PHONE_FEATURES, pa.array([1.0] * 1024, pa.float32()), key),  # no shape / phone ids
        ("gpt", m.PROMPT_SEMANTIC, pa.array([1.0], pa.float32()), {m.VOICE: "default"}),
        (
            "vocoder",
            m.SEMANTIC_TOKENS,
            pa.array([1.5], pa.float64()),
            key | {m.CHUNK_INDEX: 0, m.SEGMENT_FINAL: True, m.PHONE_IDS: [1]},
        ),
        ("vocoder", m.SEMANTIC_TOKENS, pa.array([1, 2], pa.int64()), key),  # no chunk metadata
        ("vocoder", m.REFERENCE_SPECTROGRAM, pa.array([1.0], pa.float32()), {m.VOICE: "default"}),  # no shape
        ("audio-sink", m.AUDIO, pa.array([[0.1, 0.2]], pa.list_(pa.float32())), {m.SAMPLE_RATE: SR}),
        ("audio-sink", m.AUDIO, pa.array([0.1], pa.float32()), {}),  # no sample_rate
        ("audio-sink", m.AUDIO, pa.array([1, 2], pa.int64()), {m.SAMPLE_RATE: SR}),
        ("reference", m.VOICE_REQUEST, pa.array([3], pa.int64()), {}),
    ]


@pytest.mark.parametrize("node, port, value, metadata", bad_messages(), ids=lambda x: x if isinstance(x, str) else None)
def test_a_malformed_message_is_logged_and_the_node_keeps_serving(graph, caplog, node, port, value, metadata):
    stage = graph.stages[node]
    recorder = RecordingNode([input_event(port, value, metadata)])
    with caplog.at_level(logging.ERROR):
        serve(recorder, stage)  # returns normally: the bad message did not crash the loop
    assert f"dropped malformed message on '{port}'" in caplog.text
    line = next(r.getMessage() for r in caplog.records if "malformed" in r.getMessage())
    assert "\n" not in line and port in line  # one line naming the port
    assert_spoken(graph.say("你好，世界。"))  # the graph still serves


# ---- reference audio --------------------------------------------------------------------------------
def bad_reference(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.wav"
    path = tmp_path / f"{case}.wav"
    if case == "unreadable":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    elif case == "silent":
        sf.write(path, np.zeros(SR * 4, np.float32), SR)
    elif case == "too short":
        write_voice(path, seconds=1.0)
    elif case == "too long":
        write_voice(path, seconds=30.0, rate=16000)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "not found"),
        ("unreadable", "not a readable audio file"),
        ("silent", "silent"),
        ("too short", "too short"),
        ("too long", "too long"),
    ],
)
def test_an_unusable_reference_voice_fails_its_utterance_with_the_reason(tmp_path, case, expected):
    graph = Graph(tmp_path, {"bad": Voice("bad", bad_reference(tmp_path, case), "参考。", "zh")})
    report = graph.say("你好。", **{m.VOICE: "bad"})
    assert report["audio_s"] == 0 and any(expected in e for e in report["errors"]), report
    assert_spoken(graph.say("你好。"))  # other voices are unaffected


@pytest.mark.parametrize("channels, rate", [(2, 44100), (1, 8000), (2, 22050)])
def test_stereo_and_odd_sample_rate_references_are_converted_and_used(tmp_path, channels, rate):
    voice = Voice("odd", write_voice(tmp_path / "odd.wav", rate=rate, channels=channels), "参考。", "zh")
    assert_spoken(Graph(tmp_path, {"odd": voice}).say("你好。", **{m.VOICE: "odd"}))


def test_an_unknown_voice_name_fails_its_utterance(graph):
    report = graph.say("你好。", **{m.VOICE: "nobody"})
    assert any("unknown voice 'nobody'" in e for e in report["errors"])


# ---- checkpoints ------------------------------------------------------------------------------------
def hostile_pickle(path: Path) -> Path:
    import pickle

    class Exploit:
        def __reduce__(self):
            return (exec, ("open('/tmp/gsv-pwned', 'w').write('x')",))

    path.write_bytes(pickle.dumps({"weight": Exploit()}))
    return path


BAD_FILES = [("missing", "file not found"), ("truncated", ""), ("corrupt", ""), ("hostile", "")]


@pytest.mark.parametrize(
    "loader, case, expected",
    [
        *[(loader, case, expected) for loader in ("gpt", "sovits") for case, expected in BAD_FILES],
        # A file tagged v3 (upstream's header tag 02) without the v3 network in it.
        ("sovits", "v3", "marked v3 by tag:02 but holds no flow-matching (cfm.*) weights"),
    ],
)
def test_a_bad_checkpoint_stops_its_node_with_one_line(tmp_path, capsys, case, expected, loader):
    from dora_gpt_sovits.gpt.loader import load_gpt
    from dora_gpt_sovits.runtime_config import load_model_or_exit
    from dora_gpt_sovits.sovits.loader import load_sovits

    path = tmp_path / "model.pth"
    if case == "truncated":
        torch.save({"weight": {"a": torch.zeros(1000)}, "config": {}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
    elif case == "hostile":
        hostile_pickle(path)
    elif case == "v3":
        from dora_gpt_sovits.checkpoint_io import write_tagged

        write_tagged({"weight": {}, "config": {}}, path, b"02")  # upstream's header tag of a v3 model
    with pytest.raises(SystemExit) as exit_info:
        load_model_or_exit(load_gpt if loader == "gpt" else load_sovits, path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model file unusable: ") and "\n" not in err and expected in err, err
    assert err.count(str(path)) == 1
    assert not Path("/tmp/gsv-pwned").exists()


# ---- faults: a node restarted mid-utterance -----------------------------------------------------------
class Interrupt(BaseException):  # not caught by the stages: the process "dies"
    pass


def interrupt_gpt_mid_segment(graph: Graph, text: str) -> None:
    """The GPT decodes the first chunk of the text, then its process dies (the stage raises out)."""

    def dying(phone_ids, features, prompt, seed, options):
        yield from range(20)
        raise Interrupt

    graph.stages["gpt"].decode = dying
    graph.queue.append(("text-frontend", m.TEXT, m.text_array(text), {m.UTTERANCE_ID: "cut"}))
    with pytest.raises(Interrupt):
        graph.run()


def test_gpt_killed_mid_utterance_fails_it_and_the_next_one_is_complete(graph):
    interrupt_gpt_mid_segment(graph, "第一句话。第二句话。第三句话。")
    graph.restart("gpt", GPTStage(fake_decode))  # fresh process: no voices, no open work
    (failed,) = [r for r in graph.metrics if r["utterance_id"] == "cut"]
    assert any("gpt restarted mid-segment" in e for e in failed["errors"]), failed
    assert any("gpt restarted mid-utterance" in e for e in failed["errors"]), failed
    # The new GPT lacks the voice's prompt tokens: it asks the reference, then decodes.
    assert_spoken(graph.say("你好，世界。后面的话也完整。"))


def test_vocoder_restarted_mid_utterance_fails_it_and_asks_for_its_voice_again(graph):
    graph.queue.append(("text-frontend", m.TEXT, m.text_array("第一句话。第二句话。"), {m.UTTERANCE_ID: "cut"}))
    # Deliver until the vocoder has sent the sink some audio of the first segment, then "kill" it.
    while not any(t == "audio-sink" for t, *_ in graph.queue):
        graph.deliver(*graph.queue.popleft())
    graph.restart("vocoder", VocoderStage(lambda s, e: "cond", fake_make_decoder, SR, needs_speaker_embedding=False))
    (failed,) = [r for r in graph.metrics if r["utterance_id"] == "cut"]
    assert any("vocoder restarted mid-utterance" in e for e in failed["errors"]), failed
    assert_spoken(graph.say("你好，世界。"))


def test_bert_restart_closes_the_utterances_it_cut_short(graph):
    stage = graph.stages["bert"]
    list(
        graph.stages["audio-sink"].handle(
            m.AUDIO, *m.AudioChunk(m.SegmentKey("open", 0, False), np.zeros(10, np.float32), SR, 0, True).to_message()
        )
    )
    graph.restart("bert", stage)
    (failed,) = [r for r in graph.metrics if r["utterance_id"] == "open"]
    assert any("bert restarted mid-utterance" in e for e in failed["errors"])
    assert_spoken(graph.say("你好。"))


def test_reference_restart_loses_nothing_and_repeats_waiting_requests(graph, tmp_path):
    frontend = graph.stages["text-frontend"]
    list(frontend.handle(m.TEXT, m.text_array("你好。"), {m.VOICE: "late"}))  # waits for voice "late"
    asks = list(frontend.upstream_restarted("reference", frozenset({m.VOICE_PROMPT})))
    assert [m.read_text(o.data) for o in asks] == ["late"]
    assert list(graph.stages["gpt"].upstream_restarted("reference", frozenset({m.PROMPT_SEMANTIC}))) == []
    assert_spoken(graph.say("你好。"))


def test_late_chunks_of_a_closed_utterance_and_lost_chunks_are_reported_not_played():
    sink = AudioSinkStage("null")

    def audio(segment, index, seg_final, utt_final=False, utt="u"):
        return m.AudioChunk(
            m.SegmentKey(utt, segment, utt_final), np.full(100, 0.1, np.float32), SR, index, seg_final
        ).to_message()

    list(sink.handle(m.AUDIO, *audio(0, 0, False)))
    done, report, marker = sink.upstream_restarted("gpt", None)
    # The frontend learns the utterance failed as a whole (window slots freed) and resets its window.
    assert (
        done.output_id == m.SEGMENT_COMPLETE
        and m.SegmentComplete.from_event(done.data, done.metadata).key.utterance_final
    )
    assert report.output_id == m.METRICS and "gpt restarted" in m.read_text(report.data)
    assert marker.output_id == m.SEGMENT_COMPLETE and m.restarted_node(marker.metadata) == "gpt"
    (late,) = sink.handle(m.AUDIO, *audio(0, 1, True, utt_final=True))  # straggler: not played,
    assert late.output_id == m.SEGMENT_COMPLETE  # but its window slot is freed
    list(sink.handle(m.AUDIO, *audio(0, 0, True, utt="v")))
    outs = list(sink.handle(m.AUDIO, *audio(2, 0, True, utt_final=True, utt="v")))  # segment 1 never came
    (gap,) = [o for o in outs if o.output_id == m.METRICS]
    assert any("expected segment 1 chunk 0" in e for e in json.loads(m.read_text(gap.data))["errors"])


def test_vocoder_reports_a_segment_whose_start_it_never_saw():
    vocoder = VocoderStage(lambda s, e: "cond", fake_make_decoder, SR, needs_speaker_embedding=False)
    list(
        vocoder.handle(
            m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 4), np.float32)).to_message()
        )
    )
    key = m.SegmentKey("u", 0, True)
    (err,) = vocoder.handle(m.SEMANTIC_TOKENS, *m.SemanticChunk(key, np.arange(20), 2, False, [1, 2]).to_message())
    chunk = m.AudioChunk.from_event(err.data, err.metadata)
    assert chunk.segment_final and "start of this segment was lost" in chunk.error
    assert (
        list(vocoder.handle(m.SEMANTIC_TOKENS, *m.SemanticChunk(key, np.arange(5), 3, True, [1, 2]).to_message())) == []
    )


def test_the_node_loop_turns_dora_restart_events_and_markers_into_the_stage_hook():
    class Probe(AudioSinkStage):
        def __init__(self):
            super().__init__("null")
            self.calls = []

        def upstream_restarted(self, node, inputs):
            self.calls.append((node, inputs))
            return ()

    probe = Probe()
    marker = m.restart_marker("gpt", "float32", **{m.SAMPLE_RATE: SR})
    serve(
        RecordingNode([{"type": "NODE_RESTARTED", "id": "vocoder", "kind": "dora"}, input_event(m.AUDIO, *marker)]),
        probe,
    )
    # Messages already queued are handled before the restart event that dora put ahead of them.
    assert probe.calls == [("gpt", frozenset({m.AUDIO})), ("vocoder", None)]


def test_inputs_fed_by_reads_the_node_config():
    class Node:
        def node_config(self):
            return {
                "inputs": {
                    "semantic_tokens": {"source": "gpt/semantic_tokens"},
                    "reference_spectrogram": "reference/reference_spectrogram",
                }
            }

    assert inputs_fed_by(Node(), "gpt") == frozenset({"semantic_tokens"})
    assert inputs_fed_by(Node(), "bert") == frozenset()
    assert inputs_fed_by(object(), "gpt") is None


def test_every_graph_restarts_crashed_nodes_and_wires_voice_requests_back():
    import yaml
    from conftest import REPO

    graphs = [REPO / "dataflow.yml", *sorted((REPO / "dataflows").glob("*.yml"))]
    assert len(graphs) >= 5
    for path in graphs:
        nodes = {n["id"]: n for n in yaml.safe_load(path.read_text())["nodes"]}
        for node in nodes.values():
            if str(node.get("path", "")).startswith("gsv-"):  # our nodes (not the hub's in voice-assistant)
                assert node["restart_policy"] == "on-failure" and node["max_restarts"] > 0, (path, node["id"])
        reference = nodes["reference"]["inputs"]
        assert reference["gpt_voice_request"]["source"] == "gpt/voice_request", path
        assert reference["vocoder_voice_request"]["source"] == "vocoder/voice_request", path


def test_a_restart_downstream_resets_the_frontend_window_so_lost_segments_cannot_stall_it():
    frontend = TextFrontendStage(max_segments_ahead=1)
    list(frontend.handle(m.VOICE_PROMPT, *m.ReferencePart("default", "你好。", language="zh").to_message()))
    (first,) = [
        o for o in frontend.handle(m.TEXT, m.text_array("第一句。"), {m.UTTERANCE_ID: "a"}) if o.output_id == m.PHONEMES
    ]
    assert [
        o for o in frontend.handle(m.TEXT, m.text_array("第二句。"), {m.UTTERANCE_ID: "b"}) if o.output_id == m.PHONEMES
    ] == []
    # "a" was lost in a crashed node: no segment_complete will ever come for its segment. The
    # frontend closes it with an error segment instead, which the sink reports and completes.
    (closing,) = frontend.upstream_restarted("gpt", frozenset({m.SEGMENT_COMPLETE}))
    failed = m.PhonemeSegment.from_event(closing.data, closing.metadata)
    assert failed.key.utterance_id == "a" and failed.key.utterance_final and "gpt restarted" in failed.error
    done = m.SegmentComplete(failed.key, failed.error).to_message()
    (released,) = [o for o in frontend.handle(m.SEGMENT_COMPLETE, *done) if o.output_id == m.PHONEMES]
    assert released.metadata[m.UTTERANCE_ID] == "b"


def test_the_http_server_fails_requests_in_flight_when_a_node_restarts():
    from dora_gpt_sovits.openai_api.bridge import GraphBridge

    bridge, got = GraphBridge(), []
    bridge.router.open("a", got.append)
    data, md = m.restart_marker("gpt", "float32", **{m.SAMPLE_RATE: SR})
    bridge.on_audio({"type": "INPUT", "id": m.AUDIO, "value": data, "metadata": md})
    assert got[-1].final and "gpt restarted" in got[-1].error and bridge.router.active() == 0


def test_a_segment_that_failed_mid_stream_is_reported_once():
    def breaking(cond, phone_ids, seed, speed):
        def decode(history, run, lookahead, position):
            raise RuntimeError("out of memory")

        return decode

    vocoder = VocoderStage(lambda s, e: "cond", breaking, SR, needs_speaker_embedding=False)
    list(
        vocoder.handle(
            m.REFERENCE_SPECTROGRAM, *m.ReferencePart("default", np.ones((1025, 4), np.float32)).to_message()
        )
    )
    key = m.SegmentKey("u", 0, True)
    sent = [
        list(vocoder.handle(m.SEMANTIC_TOKENS, *m.SemanticChunk(key, np.arange(20), i, i == 2, [1, 2]).to_message()))
        for i in range(3)
    ]
    assert [len(s) for s in sent] == [1, 0, 0]
    assert "out of memory" in m.AudioChunk.from_event(sent[0][0].data, sent[0][0].metadata).error


def test_a_slow_sink_makes_the_frontend_wait_and_nothing_is_dropped(graph):
    """Flow control (GSV_MAX_SEGMENTS_AHEAD = 3 in the service graph): segments leave the frontend
    only as the sink reports earlier ones played, so a slow sink holds text back, not audio."""
    graph.slow_sink = []
    text = "".join(f"这是第{i}句话。" for i in range(1, 11))
    assert graph.say(text) is None  # still being spoken
    assert graph.segments_sent == 3 and len(graph.slow_sink) == 3  # the window is full: producers wait
    played = 0
    while graph.slow_sink:  # the sink plays one segment at a time
        data, metadata = graph.slow_sink.pop(0)
        graph.queue.append(("text-frontend", m.SEGMENT_COMPLETE, data, metadata))
        graph.run()
        played += 1
        assert graph.segments_sent - played <= 3  # never more than the window ahead of playback
    (report,) = graph.metrics
    assert graph.segments_sent == 10 and report["errors"] == [] and report["audio_s"] > 10 * 0.7, report


def test_an_utterance_sent_while_the_gpt_is_down_is_reported_not_lost(graph):
    interrupt_gpt_mid_segment(graph, "第一句话。第二句话。")

    def during_downtime():
        graph.queue.append(("text-frontend", m.TEXT, m.text_array("重启期间的话。"), {m.UTTERANCE_ID: "gap"}))
        graph.run()  # its segment goes to the gpt while it loads: dora drops it

    graph.restart("gpt", GPTStage(fake_decode), downtime=during_downtime)
    (gap,) = [r for r in graph.metrics if r["utterance_id"] == "gap"]
    assert any("gpt restarted while this utterance was in flight" in e for e in gap["errors"]), gap
    assert_spoken(graph.say("你好，世界。"))  # the window is free again


def test_a_restarted_node_announces_that_it_is_back_before_serving():
    class Restarted(RecordingNode):
        def is_restart(self):
            return True

        def restart_count(self):
            return 1

    node = Restarted([])
    serve(node, BertStage(lambda text, word2ph: torch.zeros(m.FEATURE_DIM, sum(word2ph))))
    (marker,) = node.outputs(m.PHONE_FEATURES)
    assert m.restarted_node(marker[1]) == "bert" and len(marker[0]) == 0
