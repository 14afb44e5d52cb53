"""The OpenAI-compatible server without dora: schema, encoding, routing, and the app end to end
with the official ``openai`` client against a stand-in graph (a fake node that "speaks" sines)."""

from __future__ import annotations

import io
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.openai_api.app import HttpServer, create_app
from dora_gpt_sovits.openai_api.audio_encoding import StreamEncoder, pcm16, wav_header
from dora_gpt_sovits.openai_api.bridge import CONTROL, GraphBridge
from dora_gpt_sovits.openai_api.config import ServerConfig
from dora_gpt_sovits.openai_api.router import UtteranceRouter
from dora_gpt_sovits.openai_api.schema import ApiError, Limits, parse_speech_request

VOICES = ["default", "narrator"]
SR = 32000


# ---- schema -------------------------------------------------------------------------------------
def test_a_full_request_becomes_text_metadata_with_the_options():
    request = parse_speech_request(
        {
            "model": "tts-1",
            "input": "你好。",
            "voice": "narrator",
            "response_format": "pcm",
            "speed": 1.5,
            "top_k": 5,
            "top_p": 0.9,
            "temperature": 0.8,
            "language": "zh",
        },
        VOICES,
    )
    md = request.text_metadata("u1", 12.0)
    assert md == {
        m.UTTERANCE_ID: "u1",
        m.VOICE: "narrator",
        m.LANGUAGE: "zh",
        m.TEXT_RECEIVED_AT: 12.0,
        m.TOP_K: 5,
        m.TOP_P: 0.9,
        m.TEMPERATURE: 0.8,
        m.SPEED: 1.5,
    }
    plain = parse_speech_request({"input": "hi", "voice": "default"}, VOICES)
    assert plain.response_format == "mp3" and plain.options == m.RequestOptions()  # OpenAI's default


@pytest.mark.parametrize(
    "body, param, code, words",
    [
        ([1, 2], None, None, "JSON object"),
        ({"input": "", "voice": "default"}, "input", "empty_input", "non-empty"),
        ({"input": "   ", "voice": "default"}, "input", "empty_input", "non-empty"),
        ({"input": 3, "voice": "default"}, "input", "invalid_type", "string"),
        ({"input": "x" * 101, "voice": "default"}, "input", "input_too_long", "limit is 100"),
        ({"input": "hi", "voice": "alloy"}, "voice", "unknown_voice", "['default', 'narrator']"),
        (
            {"input": "hi", "voice": "default", "instructions": "whisper"},
            "instructions",
            "unsupported_parameter",
            "style",
        ),
        ({"input": "hi", "voice": "default", "stream_format": "ws"}, "stream_format", "unsupported_value", "'sse'"),
        ({"input": "hi"}, "voice", "missing_voice", "available voices"),
        (
            {"input": "hi", "voice": "default", "response_format": "ogg"},
            "response_format",
            "unsupported_format",
            "['mp3', 'opus', 'aac', 'flac', 'wav', 'pcm']",
        ),
        ({"input": "hi", "voice": "default", "model": "whisper-1"}, "model", "model_not_found", "gpt-sovits"),
        ({"input": "hi", "voice": "default", "speed": 9}, "speed", "out_of_range", "[0.25, 4.0]"),
        ({"input": "hi", "voice": "default", "speed": "fast"}, "speed", "invalid_type", "number"),
        ({"input": "hi", "voice": "default", "top_k": 2.5}, "top_k", "invalid_type", "integer"),
        ({"input": "hi", "voice": "default", "top_p": 0}, "top_p", "out_of_range", "(0.0, 1.0]"),
        ({"input": "hi", "voice": "default", "temperature": True}, "temperature", "invalid_type", "number"),
        ({"input": "hi", "voice": "default", "language": "jp"}, "language", "unsupported_value", "supported"),
        (
            {"input": "hi", "voice": "default", "voice_aliases": {}},
            "voice_aliases",
            "unknown_parameter",
            "unknown field",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(body, param, code, words):
    with pytest.raises(ApiError) as caught:
        parse_speech_request(body, VOICES, Limits(max_input_chars=100))
    error = caught.value.body()["error"]
    assert caught.value.status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["code"] == code and words in error["message"]


# ---- encoding -----------------------------------------------------------------------------------
def test_streamed_wav_is_readable_and_resampled_to_the_served_rate():
    encoder = StreamEncoder("wav", 24000)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    data = b"".join(encoder.encode(piece, SR) for piece in np.array_split(tone, 7)) + encoder.finish()
    assert data[:4] == b"RIFF" and data[36:40] == b"data"
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and abs(len(wav) - 24000) <= 2
    assert np.abs(wav[100:-100]).max() == pytest.approx(0.5, abs=0.01)


def test_pcm_is_headerless_little_endian_int16():
    encoder = StreamEncoder("pcm", SR)
    data = encoder.encode(np.array([0.0, 1.0, -1.0, 2.0], np.float32), SR) + encoder.finish()
    assert np.frombuffer(data, "<i2").tolist() == [0, 32767, -32767, 32767]
    assert wav_header(24000)[24:28] == (24000).to_bytes(4, "little") and len(pcm16(np.zeros(3))) == 6


# ---- routing ------------------------------------------------------------------------------------
def audio_chunk(utt: str, segment: int, index: int, seg_final: bool, utt_final: bool, n: int = 320, error: str = ""):
    key = m.SegmentKey(utt, segment, utt_final)
    return m.AudioChunk(key, np.full(n, 0.1, np.float32), SR, index, seg_final, error=error)


def test_router_delivers_each_utterance_to_its_request_until_its_final_chunk():
    router, got = UtteranceRouter(), {"a": [], "b": []}
    router.open("a", got["a"].append)
    router.open("b", got["b"].append)
    assert router.route(audio_chunk("a", 0, 0, True, False))
    assert router.route(audio_chunk("b", 0, 0, True, True))
    assert router.route(audio_chunk("a", 1, 0, True, True, error="boom"))
    assert not router.route(audio_chunk("a", 1, 1, True, True))  # after its end: nobody waits
    assert not router.route(audio_chunk("zzz", 0, 0, True, True))
    assert [e.final for e in got["a"]] == [False, True] and got["a"][1].error == "boom"
    assert [e.final for e in got["b"]] == [True] and router.active() == 0
    router.open("c", got["a"].append)
    router.fail_all("stopping")
    assert got["a"][-1].final and got["a"][-1].error == "stopping"


# ---- the app with the official client, against a stand-in graph ------------------------------------
class FakeGraph:
    """A dora node stand-in: each ``text`` becomes 1 segment per sentence of sine audio, delivered
    in 0.1 s chunks on a worker thread, as the vocoder would; ``control`` stops are recorded."""

    def __init__(self, seconds_per_sentence: float = 0.5, delay: float = 0.01):
        self.events: queue.Queue = queue.Queue()
        self.texts: list[tuple[str, dict]] = []
        self.controls: list[dict] = []
        self.seconds, self.delay = seconds_per_sentence, delay
        self.fail_texts: dict[str, str] = {}
        self.fail_from_segment = 0
        self.wave = sine  # seconds -> float32 samples at SR
        self.emitted_at: list[float] = []  # time.monotonic() of each audio chunk handed to the server
        # Streaming checks: after this many chunks the graph waits for ``resume`` (set by a client that
        # has its first bytes), so "bytes before the end" is an ordering fact, not a race against a clock.
        self.pause_after: int | None = None
        self.resume = threading.Event()

    def next(self, timeout: float | None = None):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return {"type": "ERROR", "error": "Receiver timed out"}

    def send_output(self, output_id, data, metadata=None):
        metadata = dict(metadata or {})
        if output_id == CONTROL:
            self.controls.append(metadata)
            return
        text = m.read_text(data)
        self.texts.append((text, metadata))
        threading.Thread(target=self.speak, args=(text, metadata), daemon=True).start()

    def speak(self, text: str, md: dict) -> None:
        sentences = [s for s in text.split(".") if s.strip()]
        for segment, _ in enumerate(sentences):
            key = m.SegmentKey(md[m.UTTERANCE_ID], segment, segment == len(sentences) - 1, md[m.VOICE])
            if text in self.fail_texts and segment >= self.fail_from_segment:
                self.emit(m.AudioChunk(key, np.zeros(0, np.float32), SR, 0, True, error=self.fail_texts[text]))
                continue
            n, step = int(self.seconds * SR), SR // 10
            wave = self.wave(self.seconds)
            for i, start in enumerate(range(0, n, step)):
                time.sleep(self.delay)
                if len(self.emitted_at) == self.pause_after:
                    self.resume.wait(timeout=30)
                self.emit(m.AudioChunk(key, wave[start : start + step], SR, i, start + step >= n))

    def emit(self, chunk: m.AudioChunk) -> None:
        self.emitted_at.append(time.monotonic())
        data, md = chunk.to_message()
        self.events.put({"type": "INPUT", "id": m.AUDIO, "value": data, "metadata": md})


def sine(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@dataclass
class Voice:
    name: str
    prompt_text: str = "参考。"
    prompt_language: str = "zh"
    aliases: tuple[str, ...] = ()


@pytest.fixture()
def served():
    graph, bridge = FakeGraph(), GraphBridge()
    node_thread = threading.Thread(target=bridge.run, args=(graph,), daemon=True)
    node_thread.start()
    config = ServerConfig(port=0, max_input_chars=200, max_active_requests=4)
    server = HttpServer(
        create_app(bridge, {v: Voice(v) for v in VOICES}, config, development_model=True), "127.0.0.1", 0
    )
    port = server.start()
    graph.bridge = bridge
    yield f"http://127.0.0.1:{port}", graph
    server.stop()
    graph.events.put({"type": "STOP", "id": "MANUAL"})
    node_thread.join(timeout=10)
    assert not node_thread.is_alive()


def client(base: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def stream_speech(base: str, text: str, response_format: str = "pcm", **extra) -> tuple[bytes, dict]:
    with client(base).audio.speech.with_streaming_response.create(
        model="gpt-sovits", voice="default", input=text, response_format=response_format, extra_body=extra or None
    ) as response:
        return b"".join(response.iter_bytes(4096)), dict(response.headers)


def http(base: str, path: str, body: dict | bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            got = response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        got = e.code, json.loads(e.read())
        if headers is not None:
            headers.update(e.headers)
    return got


def test_openai_client_streams_pcm_and_wav_with_options_in_the_text_metadata(served):
    base, graph = served
    pcm, headers = stream_speech(base, "One. Two.", top_k=3, temperature=0.5, speed=1.25)
    samples = np.frombuffer(pcm, "<i2")
    assert abs(len(samples) - 2 * 0.5 * 24000) <= 4 and np.abs(samples).max() > 5000
    assert headers["x-sample-rate"] == "24000" and float(headers["x-time-to-first-audio"]) >= 0
    text, md = graph.texts[-1]
    assert text == "One. Two." and md[m.TOP_K] == 3 and md[m.TEMPERATURE] == 0.5 and md[m.SPEED] == 1.25
    assert md[m.UTTERANCE_ID] == headers["x-request-id"] and m.TOP_P not in md
    wav_bytes, _ = stream_speech(base, "Three.", response_format="wav")
    wav, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    assert rate == 24000 and abs(len(wav) - 12000) <= 4
    status, last = http(base, "/v1/requests/last")
    assert (
        status == 200
        and last["status"] == "completed"
        and last["rtf"] > 0
        and last["audio_seconds"] == pytest.approx(0.5)
    )


def test_listings_page_and_bad_requests_answer_json_and_the_server_keeps_serving(served):
    base, graph = served
    assert [v["id"] for v in http(base, "/v1/audio/voices")[1]["data"]] == VOICES
    assert "gpt-sovits" in [x.id for x in client(base).models.list()]
    with urllib.request.urlopen(base + "/", timeout=30) as page:
        html = page.read().decode()
    assert "/v1/audio/speech" in html and "AudioContext" in html and "http" not in html.split("<script>")[1]
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        stream_speech(base, "Hi.", response_format="ogg")
    assert "['mp3', 'opus', 'aac', 'flac', 'wav', 'pcm']" in caught.value.body["message"]
    for body, status, code in [
        ({"input": "", "voice": "default"}, 400, "empty_input"),
        ({"input": "x" * 201, "voice": "default"}, 400, "input_too_long"),
        ({"input": "hi", "voice": "ghost"}, 400, "unknown_voice"),
    ]:
        got, error = http(base, "/v1/audio/speech", body)
        assert got == status and error["error"]["code"] == code, error
    raw = urllib.request.Request(
        base + "/v1/audio/speech", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as bad_json:
        urllib.request.urlopen(raw, timeout=30)
    assert bad_json.value.code == 400 and json.loads(bad_json.value.read())["error"]["code"] == "invalid_json"
    assert http(base, "/v1/nothing")[0] == 404
    assert not graph.texts  # nothing bad reached the graph
    assert len(np.frombuffer(stream_speech(base, "Still here.")[0], "<i2")) > 0


def test_concurrent_requests_each_get_their_whole_audio(served):
    base, _ = served
    texts = ["A. B. C.", "D.", "E. F."]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda t: stream_speech(base, t)[0], texts))
    for text, pcm in zip(texts, results):
        assert abs(len(pcm) // 2 - text.count(".") * 12000) <= 4 * text.count(".")


def test_a_request_the_graph_cannot_speak_gets_a_json_error(served):
    base, graph = served
    graph.fail_texts["Nope."] = "nothing to speak in 'Nope.'"
    status, error = http(base, "/v1/audio/speech", {"input": "Nope.", "voice": "default"})
    assert (
        status == 500
        and error["error"]["code"] == "synthesis_failed"
        and "nothing to speak" in error["error"]["message"]
    )


def test_a_client_that_disconnects_cancels_its_utterance(served):
    base, graph = served
    graph.seconds, graph.delay = 5.0, 0.05  # 50 chunks, 2.5 s: plenty of time to leave early
    with client(base).audio.speech.with_streaming_response.create(
        model="gpt-sovits", voice="default", input="Long one.", response_format="pcm"
    ) as response:
        next(response.iter_bytes(1024))
    deadline = time.time() + 10
    while not graph.controls and time.time() < deadline:
        time.sleep(0.05)
    assert graph.controls and graph.controls[0][m.UTTERANCE_ID] == graph.texts[-1][1][m.UTTERANCE_ID]
    assert http(base, "/v1/requests/last")[1]["status"] == "cancelled"


def test_an_error_after_audio_started_cuts_the_stream_instead_of_ending_it_cleanly(served):
    from http.client import IncompleteRead

    base, graph = served
    graph.fail_texts["Fine. Broken."], graph.fail_from_segment = "GPT decoding failed: boom", 1
    request = urllib.request.Request(
        base + "/v1/audio/speech",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"input": "Fine. Broken.", "voice": "default"}).encode(),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        with pytest.raises(IncompleteRead):
            response.read()
    last = http(base, "/v1/requests/last")[1]
    assert last["status"] == "failed" and "boom" in last["error"]


# ---- hostile requests, HTTP/1.0, restarts (issue #15, classes 1 and 6) ----------------------------
def assert_openai_error(status: int, body: dict, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert code is None or body["error"]["code"] == code, body


@pytest.mark.parametrize(
    "raw, code",
    [
        (
            b'{"input": "hi", "voice": "default", "top_k": ' + b"9" * 5000 + b"}",
            "invalid_json",
        ),  # Python's 4300-digit limit
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # RecursionError in the parser
        (
            b'{"input": "hi", "voice": "default", "top_k": 1' + b"0" * 400 + b"}",
            "out_of_range",
        ),  # float() would overflow
        (b'{"input": "hi", "voice": "default", "top_p": 1e400}', "out_of_range"),  # inf
        (b'{"input": "hi", "voice": "default", "speed": NaN}', "out_of_range"),
        (b'{"input": "\\ud800 hello", "voice": "default"}', "invalid_unicode"),  # a lone surrogate, valid JSON
        (b'{"input": "hi", "voice": "\\udfff"}', "unknown_voice"),
        (b'{"input": "hi", "voice": {"id": "\\ud800"}}', "unknown_voice"),
        (b'{"input": "hi", "voice": "default", "language": ["zh"]}', "unsupported_value"),  # unhashable
        (b'{"\\ud800": 1, "input": "hi", "voice": "default"}', "unknown_parameter"),
        (b'{"input": "\xff\xfe", "voice": "default"}', "invalid_json"),  # not UTF-8
    ],
)
def test_hostile_bodies_get_a_400_json_error_and_the_server_keeps_serving(served, raw, code):
    base, graph = served
    status, body = http(base, "/v1/audio/speech", raw)
    assert_openai_error(status, body, 400, code)
    assert not graph.texts and graph.bridge.router.active() == 0  # nothing reached the graph, no route left open
    assert len(np.frombuffer(stream_speech(base, "Still here.")[0], "<i2")) > 0


def test_an_http_1_0_client_gets_the_whole_stream_without_chunked_encoding(served):
    import socket

    base, graph = served
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"input": "One. Two.", "voice": "default", "response_format": "pcm"}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/audio/speech HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        reply = b""
        while chunk := conn.recv(65536):  # HTTP/1.0: the body ends where the server closes
            reply += chunk
    head, _, audio = reply.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.0 200"), head
    assert "transfer-encoding: chunked" not in lines and "connection: close" in lines
    assert len(audio) == 2 * 2 * 12000  # two sentences of 0.5 s, 16-bit at 24 kHz: all of it, unframed
    status, error = http(base, "/v1/audio/speech", {"input": "", "voice": "default"})  # still serving
    assert_openai_error(status, error, 400, "empty_input")


def wait_for(condition, what: str) -> None:
    deadline = time.time() + 10
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.01)


def test_a_request_while_the_frontend_restarts_gets_a_503_until_it_echoes_a_probe(served):
    base, graph = served
    bridge = graph.bridge
    graph.events.put({"type": "NODE_RESTARTED", "id": "text-frontend"})  # dora: through frontend_control
    wait_for(lambda: bridge.unavailable() is not None, "the bridge heard of the restart")
    headers: dict = {}
    status, error = http(base, "/v1/audio/speech", {"input": "Hello.", "voice": "default"}, headers)
    assert_openai_error(status, error, 503, "service_unavailable")
    assert "text-frontend" in error["error"]["message"] and int(headers["Retry-After"]) >= 1
    assert not graph.texts  # not sent into the gap, where dora would drop it
    # The bridge asks the frontend whether it serves (a stop for a made-up id) until it answers.
    wait_for(lambda: graph.controls, "a probe was sent")
    probe = graph.controls[-1][m.UTTERANCE_ID]
    assert probe.startswith("gsv-http-probe-")
    graph.events.put(
        {
            "type": "INPUT",
            "id": "frontend_control",
            "value": m.text_array("stop"),
            "metadata": {m.UTTERANCE_ID: "a client's stop", m.CANCEL_BEFORE: 1.0},
        }
    )
    time.sleep(0.05)  # an ordinary stop echoed by the frontend proves nothing
    assert bridge.unavailable() is not None
    graph.events.put(
        {
            "type": "INPUT",
            "id": "frontend_control",
            "value": m.text_array("stop"),
            "metadata": {m.UTTERANCE_ID: probe, m.CANCEL_BEFORE: 1.0},
        }
    )
    wait_for(lambda: bridge.unavailable() is None, "the echo ends the wait")
    assert len(np.frombuffer(stream_speech(base, "Back.")[0], "<i2")) > 0


def test_a_restart_down_the_audio_path_refuses_requests_until_the_node_is_ready(served):
    base, graph = served
    bridge = graph.bridge
    down, md = m.restart_marker("gpt", "float32", **{m.SAMPLE_RATE: SR})
    graph.events.put({"type": "INPUT", "id": m.AUDIO, "value": down, "metadata": md})
    wait_for(lambda: bridge.unavailable() is not None, "the crash marker arrived")
    assert_openai_error(*http(base, "/v1/audio/speech", {"input": "Hi.", "voice": "default"}), 503)
    graph.events.put({"type": "INPUT", "id": m.AUDIO, "value": down, "metadata": md | {m.RESTART_READY: True}})
    wait_for(lambda: bridge.unavailable() is None, "the ready marker arrived")
    assert len(np.frombuffer(stream_speech(base, "Back.")[0], "<i2")) > 0


def test_without_a_sign_of_return_the_refusal_ends_after_the_grace_period():
    from dora_gpt_sovits.openai_api.bridge import Availability

    now = [100.0]
    availability = Availability(grace_seconds=30.0, clock=lambda: now[0])
    availability.went_down("reference")
    reason, retry_after = availability.unavailable()
    assert "reference" in reason and retry_after > 0
    now[0] += 31.0
    assert availability.unavailable() is None
    availability.gone("vocoder", "the vocoder has stopped")
    reason, retry_after = availability.unavailable()
    assert "vocoder has stopped" in reason and retry_after is None  # waiting will not help


def test_a_graph_whose_audio_closed_answers_503_and_the_port_stays_open(served):
    base, graph = served
    graph.events.put({"type": "INPUT_CLOSED", "id": m.AUDIO})
    wait_for(lambda: graph.bridge.unavailable() is not None, "the close arrived")
    headers: dict = {}
    status, error = http(base, "/v1/audio/speech", {"input": "Hi.", "voice": "default"}, headers)
    assert_openai_error(status, error, 503) and "Retry-After" not in headers
    assert http(base, "/v1/models")[0] == 200


def test_a_fault_of_ours_is_a_500_in_the_api_shape_and_leaves_no_route_open():
    class Broken(GraphBridge):
        def start(self, utterance_id, request, received_at, deliver):
            self.router.open(utterance_id, deliver)
            raise RuntimeError("boom")

    bridge = Broken()
    server = HttpServer(create_app(bridge, {"default": Voice("default")}, ServerConfig(port=0)), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.start()}"
    try:
        status, error = http(base, "/v1/audio/speech", {"input": "Hi.", "voice": "default"})
        assert_openai_error(status, error, 500, "internal_error")
        assert bridge.router.active() == 0 and http(base, "/v1/models")[0] == 200
    finally:
        server.stop()
