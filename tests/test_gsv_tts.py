"""gsv-tts, the one-node drop-in for dora-kokoro-tts: its wiring, and the stage graph it serves.

Stand-in models (tests/test_reliability.py's), real stages and the real node loop on a recording
MockNode: no daemon, no weights, milliseconds. The dora run with the tiny development model in the
node-hub example's own graph is tests/test_gsv_tts_e2e.py.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from conftest import REPO, RecordingNode, closed_event, input_event
from test_reliability import fake_features, write_voice

from dora_gpt_sovits import messages as m
from dora_gpt_sovits import settings
from dora_gpt_sovits.audio.limiter import PeakLimiter
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, serve
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.nodes.gpt_decoder import GPTStage
from dora_gpt_sovits.nodes.gsv_tts import (
    KOKORO_DEFAULTS,
    ONE_PROCESS_DEFAULTS,
    WIRING,
    check_window,
    tts_graph,
    with_kokoro_defaults,
)
from dora_gpt_sovits.nodes.reference import ReferenceStage
from dora_gpt_sovits.nodes.text_frontend import TextFrontendStage
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.stage_graph import INPUT, OUTPUT, StageGraph
from dora_gpt_sovits.voices import Voice

SR = 32000
TOKENS_PER_SEGMENT = 60  # the stand-in GPT
TOKEN_SECONDS = 640 / 32000  # the stand-in vocoder: 20 ms of audio per token
THREE_SENTENCES = "你好，世界。今天天气很好。我们去公园散步吧。"


class Decoding:
    """The stand-in GPT's decode, counting the tokens it has been asked for (when audio left)."""

    def __init__(self) -> None:
        self.tokens = 0

    def __call__(self, phone_ids, features, prompt, seed, options):
        for token in range(TOKENS_PER_SEGMENT):
            self.tokens += 1
            yield token


def speech_decoder(cond, phone_ids, seed, speed):
    def decode(history, run, lookahead, position):
        t = (np.arange(len(run) * 640) + position * 640) / SR
        return torch.from_numpy(0.9 * np.sin(2 * np.pi * 220 * t)).float(), torch.zeros(0)

    return decode


def stages(tmp_path, decoding: Decoding, **vocoder) -> dict[str, StageBase]:
    registry = {
        "default": Voice("default", write_voice(tmp_path / "default.wav"), "你好。", "zh"),
        "second": Voice("second", write_voice(tmp_path / "second.wav"), "第二个。", "zh"),
    }
    return {
        "text-frontend": TextFrontendStage(),
        "reference": ReferenceStage(registry, fake_features, lambda v: str(v.ref_audio)),
        "bert": BertStage(lambda text, word2ph: torch.zeros(m.FEATURE_DIM, sum(word2ph))),
        "gpt": GPTStage(decoding),
        "vocoder": VocoderStage(lambda spec, sv: "cond", speech_decoder, SR, needs_speaker_embedding=False, **vocoder),
    }


def run(graph: StageGraph, events: list[dict]) -> RecordingNode:
    node = RecordingNode(events)
    serve(node, graph)
    return node


def audio_of(node: RecordingNode) -> list[tuple[np.ndarray, dict]]:
    return [(data.to_numpy(), md) for data, md in node.outputs(m.AUDIO)]


# ---- the wiring ------------------------------------------------------------------------------------
def test_the_stages_are_wired_as_in_the_staged_graph():
    """dataflow.yml's edges between the five stages, the node's text/control in and audio out."""
    graph = yaml.safe_load((REPO / "dataflow.yml").read_text(encoding="utf-8"))
    staged = {}
    for node in graph["nodes"]:
        if node["id"] in WIRING:
            sources = {i: (s["source"] if isinstance(s, dict) else s) for i, s in node.get("inputs", {}).items()}
            staged[node["id"]] = {i: s for i, s in sources.items() if s.split("/")[0] in WIRING}
    ours = {n: {i: s for i, s in inputs.items() if not s.startswith(f"{INPUT}/")} for n, inputs in WIRING.items()}
    del ours[OUTPUT]
    assert ours == staged
    assert WIRING["text-frontend"][m.TEXT] == f"{INPUT}/{m.TEXT}"
    assert WIRING["text-frontend"][m.CONTROL] == f"{INPUT}/{m.CONTROL}"
    assert WIRING[OUTPUT] == {m.AUDIO: f"vocoder/{m.AUDIO}"}


def test_kokoro_defaults_fill_only_what_the_user_left_unset():
    assert with_kokoro_defaults({}) == KOKORO_DEFAULTS | ONE_PROCESS_DEFAULTS
    assert KOKORO_DEFAULTS["GSV_OUTPUT_SAMPLE_RATE"] == "24000"
    assert float(KOKORO_DEFAULTS["GSV_PEAK_LIMIT"]) <= 32767 / 70000  # dora-pyaudio's int16 cast
    mine = {"GSV_OUTPUT_SAMPLE_RATE": "16000", "GSV_PEAK_LIMIT": "", "GSV_FIRST_RUN_THREADS": "1"}
    assert with_kokoro_defaults(mine) == {"GSV_MAX_LEAD_SECONDS": KOKORO_DEFAULTS["GSV_MAX_LEAD_SECONDS"]}


# ---- the manifest ------------------------------------------------------------------------------------
def manifest() -> dict:
    return yaml.safe_load((REPO / "dora-node.yml").read_text(encoding="utf-8"))


def test_the_manifest_is_valid_for_dora_and_names_the_console_script():
    if shutil.which("dora") is None:
        pytest.skip("dora CLI not installed")
    result = subprocess.run(
        ["dora", "validate", "--node-manifest", str(REPO / "dora-node.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr[:2000]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts[manifest()["entrypoint"]] == "dora_gpt_sovits.nodes.gsv_tts:main"


def test_the_manifest_declares_the_nodes_ports_and_the_settings_defaults():
    doc = manifest()
    graph = tts_graph({n: StageBase() for n in WIRING if n != OUTPUT})
    assert set(doc["inputs"]) == graph.inputs and doc["inputs"]["text"]["required"]
    assert set(doc["outputs"]) == set(WIRING[OUTPUT])
    declared = settings.all_variables()
    assert set(doc["env"]) <= set(declared)
    for name, value in (KOKORO_DEFAULTS | ONE_PROCESS_DEFAULTS).items():
        assert float(doc["env"][name]["default"]) == float(value), name
    for name, spec in doc["env"].items():
        default = declared[name][1].default
        if name not in KOKORO_DEFAULTS | ONE_PROCESS_DEFAULTS and default is not None:
            assert spec["default"] == default, name


@pytest.mark.parametrize("wired, ends", [({"text": {}}, True), ({"text": {}, "segment_complete": {}}, False)])
def test_a_window_without_acknowledgements_ends_the_node_with_one_line(wired, ends, capsys):
    class Node:
        def node_config(self):
            return {"inputs": wired}

    check_window(0, Node())  # no window: nothing to check
    if not ends:
        check_window(3, Node())
        return
    with pytest.raises(SystemExit) as exit:
        check_window(3, Node())
    assert exit.value.code == 2
    assert capsys.readouterr().err.count("GSV_MAX_SEGMENTS_AHEAD=3 needs gsv-tts's segment_complete") == 1


def test_a_wiring_naming_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="not stages"):
        StageGraph("g", {"a": StageBase()}, {"a": {"x": "b/y"}})
    with pytest.raises(ValueError, match="node/output"):
        StageGraph("g", {"a": StageBase()}, {"a": {"x": "input"}})


# ---- the graph as one stage ------------------------------------------------------------------------
def test_every_sentence_is_spoken_in_order_in_the_kokoro_contract(tmp_path):
    limiter = PeakLimiter(0.45, gain=0.45)
    graph = tts_graph(stages(tmp_path, Decoding(), output_rate=24000, limiter=limiter))
    node = run(graph, [input_event(m.TEXT, m.text_array(THREE_SENTENCES)), closed_event(m.TEXT)])
    audio = audio_of(node)
    assert {o for o, _, _ in node.sent} == {m.AUDIO}  # only the kokoro port leaves the node
    assert all(a.dtype == np.float32 and a.ndim == 1 for a, _ in audio)
    assert {md[m.SAMPLE_RATE] for _, md in audio} == {24000}
    assert max(len(a) for a, _ in audio) <= 24000  # <= 1 s per message
    assert 0.1 < max(float(np.abs(a).max()) for a, _ in audio if len(a)) <= 0.45
    segments = [(md[m.SEGMENT_INDEX], md[m.CHUNK_INDEX]) for _, md in audio]
    assert segments == sorted(segments) and {s for s, _ in segments} == {0, 1, 2}
    assert audio[-1][1][m.UTTERANCE_FINAL] and audio[-1][1][m.SEGMENT_FINAL]
    assert not any(md.get(m.ERROR) for _, md in audio)
    # every token's audio and the pause after each sentence, at 24 kHz
    expected = 3 * (TOKENS_PER_SEGMENT * TOKEN_SECONDS + 0.3) * 24000
    assert sum(len(a) for a, _ in audio) == pytest.approx(expected, abs=300)


def test_audio_leaves_while_the_first_sentence_is_still_being_decoded(tmp_path):
    decoding = Decoding()
    graph = tts_graph(stages(tmp_path, decoding))
    first_audio_after = []

    class Watch(RecordingNode):
        def send_output(self, output_id, data, metadata=None):
            if not first_audio_after:
                first_audio_after.append(decoding.tokens)
            super().send_output(output_id, data, metadata)

    node = Watch([input_event(m.TEXT, m.text_array(THREE_SENTENCES)), closed_event(m.TEXT)])
    serve(node, graph)
    # the GPT's first chunk (8 tokens) plus the vocoder's lookahead: far from the sentence's 60
    assert first_audio_after and first_audio_after[0] < TOKENS_PER_SEGMENT / 2, first_audio_after
    assert decoding.tokens == 3 * TOKENS_PER_SEGMENT


def test_a_stop_between_two_tokens_silences_the_utterance_and_the_next_one_is_spoken(tmp_path):
    """A kokoro graph may wire dora-vad's timestamp_start to `control`: an Int64, any non-text = stop all."""
    decoding = Decoding()
    graph = tts_graph(stages(tmp_path, decoding))
    assert graph.control_inputs == {m.CONTROL}
    events = [
        input_event(m.TEXT, m.text_array(THREE_SENTENCES), {m.UTTERANCE_ID: "first"}),
        input_event(m.CONTROL, pa.array([16000], type=pa.int64())),  # read at the GPT's first poll point
        input_event(m.TEXT, m.text_array("好的。"), {m.UTTERANCE_ID: "next"}),
        closed_event(m.TEXT),
    ]
    node = run(graph, events)
    audio = audio_of(node)
    assert not [md for _, md in audio if md[m.UTTERANCE_ID] == "first"]
    assert decoding.tokens < TOKENS_PER_SEGMENT + TOKENS_PER_SEGMENT  # cut short, then the next one
    spoken = [(a, md) for a, md in audio if md[m.UTTERANCE_ID] == "next"]
    assert spoken and spoken[-1][1][m.UTTERANCE_FINAL] and sum(len(a) for a, _ in spoken) > SR
    assert spoken[0][1].get(m.FLUSH) is True  # dora-pyaudio's queue drops stale audio


def test_a_voice_loaded_on_request_waits_in_order_and_the_stages_are_never_reentered(tmp_path):
    """voice `second` is encoded on request: the reference's answer reaches the frontend while the
    frontend's own handler is still suspended, so it waits in the backlog until the chain unwinds."""
    graph = tts_graph(stages(tmp_path, Decoding()))
    entered: list[str] = []
    for name, stage in graph.stages.items():
        handle = stage.handle

        def guarded(input_id, value, metadata, name=name, handle=handle):
            assert name not in entered or input_id == m.CONTROL, f"{name} re-entered with {input_id}"
            entered.append(name)
            try:
                yield from handle(input_id, value, metadata)
            finally:
                entered.remove(name)

        stage.handle = guarded
    events = [
        input_event(m.TEXT, m.text_array(THREE_SENTENCES), {m.VOICE: "second", m.UTTERANCE_ID: "a"}),
        input_event(m.TEXT, m.text_array("第三句。"), {m.UTTERANCE_ID: "b"}),
        closed_event(m.TEXT),
    ]
    node = run(graph, events)
    audio = audio_of(node)
    order = [(md[m.UTTERANCE_ID], md[m.SEGMENT_INDEX]) for _, md in audio if md[m.SEGMENT_FINAL]]
    assert order == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert {md[m.VOICE] for _, md in audio if md[m.UTTERANCE_ID] == "a"} == {"second"}
    assert not graph.backlog and not graph.pending()


def test_pacing_releases_audio_while_the_gpt_decodes(tmp_path):
    """GSV_MAX_LEAD_SECONDS: audio held back is released at the GPT's poll points when it is due,
    not when the vocoder next has something to offer: a listener never waits for held audio."""
    now = [0.0]

    class Clocked(Decoding):
        def __call__(self, *args):
            for token in super().__call__(*args):
                now[0] += TOKEN_SECONDS * 0.9  # decoding runs a little faster than real time
                yield token

    lead = 0.1
    graph = tts_graph(stages(tmp_path, Clocked(), max_lead_seconds=lead, clock=lambda: now[0]))
    graph.clock = lambda: now[0]
    sends: list[tuple[float, float, int]] = []  # (sent at, seconds of audio, sentence)

    class Simulated(RecordingNode):
        """dora's node on the simulated clock: once the inputs are exhausted, a wait with a
        timeout ends in dora's timeout event (the mock would end the node at once)."""

        def try_recv(self):
            event = super().try_recv()
            return None if event is not None and event["type"] == "STOP" else event

        def next(self, timeout=None):
            event = self.try_recv()
            if event is not None or timeout is None:
                return event
            now[0] += timeout + 1e-6
            return {"type": "ERROR", "error": "Receiver timed out"}

        def send_output(self, output_id, data, metadata=None):
            sends.append((now[0], len(data) / SR, metadata[m.SEGMENT_INDEX]))
            super().send_output(output_id, data, metadata)

    # (no STOP: the node ends when its text input is closed and nothing is held any more)
    node = Simulated([input_event(m.TEXT, m.text_array(THREE_SENTENCES)), closed_event(m.TEXT)])
    serve(node, graph, clock=lambda: now[0])
    played_until, gaps = sends[0][0], []
    for at, seconds, sentence in sends:  # a consumer playing each message in real time from its arrival
        gaps.append((sentence, max(0.0, at - played_until)))
        played_until = max(played_until, at) + seconds
    # The first sentence starts with streaming's own underruns (decoding at 0.9 x real time); the
    # later ones are decoded while earlier audio plays, held back by the pacer: they never wait.
    later = [gap for sentence, gap in gaps if sentence > 0]
    assert max(later) < TOKEN_SECONDS, gaps
    assert len(sends) > 3 * 3  # held audio left in several messages per sentence
    expected = 3 * (TOKENS_PER_SEGMENT * TOKEN_SECONDS + 0.3) * SR
    assert sum(len(d) for d, _ in node.outputs(m.AUDIO)) == pytest.approx(expected, abs=100)


def test_a_message_on_an_unknown_input_is_one_logged_error_and_the_node_keeps_serving(tmp_path, caplog):
    graph = tts_graph(stages(tmp_path, Decoding()))
    events = [input_event("tick", pa.array([1])), input_event(m.TEXT, m.text_array("好。")), closed_event(m.TEXT)]
    node = run(graph, events)
    assert "has no input 'tick'" in caplog.text
    assert node.outputs(m.AUDIO)


def test_a_malformed_message_inside_is_that_stages_loss_and_the_rest_is_spoken(tmp_path, caplog):
    graph = tts_graph(stages(tmp_path, Decoding()))
    bert = graph.stages["bert"]
    handle = bert.handle

    def failing_on_the_second_sentence(input_id, value, metadata):
        if input_id == m.PHONEMES and metadata[m.SEGMENT_INDEX] == 1:
            raise m.MessageError("word2ph covers 3 phones, not 4")
        return handle(input_id, value, metadata)

    bert.handle = failing_on_the_second_sentence
    node = run(graph, [input_event(m.TEXT, m.text_array(THREE_SENTENCES)), closed_event(m.TEXT)])
    assert "bert: dropped malformed message on 'phonemes': word2ph covers" in caplog.text
    assert {md[m.SEGMENT_INDEX] for _, md in audio_of(node)} == {0, 2}  # the frontend went on


def test_a_restart_of_the_node_itself_closes_what_a_sink_had_open(tmp_path):
    graph = tts_graph(stages(tmp_path, Decoding()))
    sent = [o for o in graph.upstream_restarted("gsv-tts", None) if o is not None]
    assert [o.output_id for o in sent] == [m.AUDIO]
    assert m.restarted_node(sent[0].metadata) == "gsv-tts"


def test_graph_outputs_go_out_under_the_graph_port_names():
    class Echo(StageBase):
        def handle(self, input_id, value, metadata):
            yield Outgoing("y", value, metadata)

    graph = StageGraph("g", {"a": Echo()}, {"a": {"x": "input/in"}, "output": {"out": "a/y"}})
    assert [o.output_id for o in graph.handle("in", pa.array([1]), {})] == ["out"]


def test_pacing_holds_to_the_end_when_the_stop_arrives_while_the_first_reply_is_spoken(tmp_path):
    """The CI failure of the hub e2e test: dora's STOP (all inputs closed) reached the node while it
    was still speaking, was set aside with the queued text and then swallowed by the loop's drain;
    the stream's end then sent every held message at once, and dora-pyaudio's 10-deep drop-oldest
    queue lost the next reply's first sentence. Every message must still leave within the lead."""
    now = [0.0]
    lead = 0.5
    graph = tts_graph(stages(tmp_path, Decoding(), max_lead_seconds=lead, clock=lambda: now[0]))
    graph.clock = lambda: now[0]
    sends: list[tuple[float, float]] = []  # (sent at, seconds of audio)

    class Dora:
        """dora's event stream: ``next`` gives None once it ended (after the STOP), never a timeout."""

        def __init__(self, events):
            self.events = list(events)

        def try_recv(self):
            return self.events.pop(0) if self.events else None

        def next(self, timeout=None):
            return self.try_recv()

        def send_output(self, output_id, data, metadata=None):
            sends.append((now[0], len(data) / SR))

    def sleep(seconds):
        now[0] += seconds + 1e-6

    events = [
        input_event(m.TEXT, m.text_array(THREE_SENTENCES), {m.UTTERANCE_ID: "first"}),
        input_event(m.TEXT, m.text_array("好的。"), {m.UTTERANCE_ID: "next"}),
        closed_event(m.TEXT),
        {"type": "STOP", "id": "ALL_INPUTS_CLOSED"},
    ]
    serve(Dora(events), graph, clock=lambda: now[0], sleep=sleep)
    played_until, leads = float("-inf"), []
    for at, seconds in sends:  # a consumer playing each message in real time from its arrival
        played_until = max(played_until, at)
        leads.append(played_until - at)
        played_until += seconds
    assert max(leads) <= lead + 1e-3, leads
    expected = 4 * (TOKENS_PER_SEGMENT * TOKEN_SECONDS + 0.3) * SR
    assert sum(seconds for _, seconds in sends) * SR == pytest.approx(expected, abs=200)
