"""Clients written for OpenAI or Kokoro-FastAPI against this server (stand-in graph, no dora): OpenAI's
voice names through voices.yml's aliases, ``instructions``, CORS for pages on other origins,
Kokoro-FastAPI's voice list and extra fields."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from openai import BadRequestError
from test_openai_server import FakeGraph, Voice, client

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.openai_api.app import HttpServer, create_app
from dora_gpt_sovits.openai_api.bridge import GraphBridge
from dora_gpt_sovits.openai_api.config import ServerConfig
from dora_gpt_sovits.voices import VoiceError, load_registry, voice_aliases

VOICES = {"default": Voice("default"), "narrator": Voice("narrator", aliases=("alloy", "nova"))}


@contextlib.contextmanager
def serving(**config):
    graph, bridge = FakeGraph(seconds_per_sentence=0.2), GraphBridge()
    node = threading.Thread(target=bridge.run, args=(graph,), daemon=True)
    node.start()
    server = HttpServer(create_app(bridge, VOICES, ServerConfig(port=0, **config)), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.start()}", graph
    finally:
        server.stop()
        graph.events.put({"type": "STOP", "id": "MANUAL"})
        node.join(timeout=10)


@pytest.fixture()
def base_graph():
    with serving() as served:
        yield served


def call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    """(status, headers, body bytes) of one plain HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def speak(base: str, **fields) -> tuple[int, dict, bytes]:
    body = {"model": "gpt-sovits", "input": "Hi.", "voice": "default", "response_format": "pcm"} | fields
    status, headers, data = call(base + "/v1/audio/speech", "POST", body)
    return status, headers, data


# ---- voices ---------------------------------------------------------------------------------------
def test_voices_yml_aliases_map_openai_names_onto_voices(tmp_path: Path):
    (tmp_path / "voices.yml").write_text(
        "narrator: {ref_audio: n.wav, aliases: [alloy, echo]}\nkid: {ref_audio: k.wav, aliases: nova}\nplain: {ref_audio: p.wav}\n"
    )
    registry = load_registry({}, model_dir=tmp_path)
    assert registry["narrator"].aliases == ("alloy", "echo") and registry["plain"].aliases == ()
    assert voice_aliases(registry) == {"alloy": "narrator", "echo": "narrator", "nova": "kid"}
    (tmp_path / "voices.yml").write_text(
        "a: {ref_audio: a.wav, aliases: [alloy]}\nb: {ref_audio: b.wav, aliases: [alloy]}\n"
    )
    with pytest.raises(VoiceError, match="'alloy' is given to two voices"):
        voice_aliases(load_registry({}, model_dir=tmp_path))
    (tmp_path / "voices.yml").write_text("a: {ref_audio: a.wav, aliases: [b]}\nb: {ref_audio: b.wav}\n")
    with pytest.raises(VoiceError, match="already the name of a voice"):
        voice_aliases(load_registry({}, model_dir=tmp_path))
    (tmp_path / "voices.yml").write_text("a: {ref_audio: a.wav, aliases: {x: 1}}\n")
    with pytest.raises(VoiceError, match="'aliases' must be a list of names"):
        load_registry({}, model_dir=tmp_path)


def test_an_openai_voice_name_reaches_its_voice_and_an_unknown_one_lists_the_choices(base_graph):
    base, graph = base_graph
    with client(base).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="pcm"
    ) as response:
        assert len(response.read()) > 0
    assert graph.texts[-1][1][m.VOICE] == "narrator"
    with pytest.raises(BadRequestError) as caught:
        client(base).audio.speech.create(model="tts-1", voice="shimmer", input="Hi.")
    message = caught.value.body["message"]
    assert "'shimmer'" in message and "['default', 'narrator']" in message and "['alloy', 'nova']" in message
    status, _, body = call(base + "/v1/audio/voices")
    narrator = json.loads(body)["data"][1]
    assert status == 200 and narrator["id"] == "narrator" and narrator["aliases"] == ["alloy", "nova"]


def test_instructions_are_refused_with_the_reason_unless_empty(base_graph):
    base, _ = base_graph
    with pytest.raises(BadRequestError) as caught:
        client(base).audio.speech.create(model="gpt-4o-mini-tts", voice="default", input="Hi.", instructions="Calm.")
    assert caught.value.body["param"] == "instructions" and "reference recording" in caught.value.body["message"]
    assert speak(base, instructions="")[0] == 200


# ---- CORS -----------------------------------------------------------------------------------------
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization"}


def test_cors_is_off_by_default_and_a_preflight_says_how_to_turn_it_on(base_graph):
    base, _ = base_graph
    status, headers, body = call(
        base + "/v1/audio/speech", "OPTIONS", headers={"Origin": "https://app.example"} | PREFLIGHT
    )
    assert status == 403 and "GSV_HTTP_CORS_ORIGINS" in json.loads(body)["error"]["message"]
    status, headers, _ = call(base + "/v1/models", headers={"Origin": "https://app.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_listed_origins_get_cors_headers_on_preflight_audio_streams_and_errors():
    with serving(cors_origins="https://app.example, http://localhost:3000") as (base, _):
        origin = {"Origin": "http://localhost:3000"}
        status, headers, _ = call(base + "/v1/audio/speech", "OPTIONS", headers=origin | PREFLIGHT)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "content-type, authorization"
        status, headers, data = call(
            base + "/v1/audio/speech", "POST", {"input": "Hi.", "voice": "default", "response_format": "pcm"}, origin
        )
        assert status == 200 and len(data) > 0 and headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "X-Request-Id" in headers["Access-Control-Expose-Headers"] and headers["Vary"] == "Origin"
        status, headers, _ = call(base + "/v1/audio/speech", "POST", {"input": ""}, origin)
        assert status == 400 and headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        status, headers, _ = call(base + "/v1/models", headers={"Origin": "https://evil.example"})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        evil = {"Origin": "https://evil.example"} | PREFLIGHT
        assert call(base + "/v1/audio/speech", "OPTIONS", headers=evil)[0] == 403
    with serving(cors_origins="*") as (base, _):
        status, headers, _ = call(base + "/v1/models", headers={"Origin": "https://any.example"})
        assert headers["Access-Control-Allow-Origin"] == "*"


# ---- Kokoro-FastAPI -------------------------------------------------------------------------------
def test_kokoro_voice_list_shapes_beside_ours(base_graph):
    base, _ = base_graph
    listing = json.loads(call(base + "/v1/audio/voices")[2])
    assert listing["voices"] == [{"id": "default", "name": "default"}, {"id": "narrator", "name": "narrator"}]
    assert [v["id"] for v in listing["data"]] == ["default", "narrator"]  # the page's shape stays
    assert json.loads(call(base + "/v1/audio/voices?legacy=true")[2])["voices"] == ["default", "narrator"]


def test_kokoro_fields_that_mean_something_here_are_honoured(base_graph):
    base, graph = base_graph
    status, _, loud = speak(base, model="kokoro", lang_code="a", stream=True)
    assert status == 200 and graph.texts[-1][1][m.LANGUAGE] == "en"
    status, _, quiet = speak(
        base, volume_multiplier=0.5, normalization_options={"normalize": True, "url_normalization": False}
    )
    ratio = np.abs(np.frombuffer(quiet, "<i2")).max() / np.abs(np.frombuffer(loud, "<i2")).max()
    assert status == 200 and ratio == pytest.approx(0.5, abs=0.01)
    status, headers, whole = speak(base, stream=False, response_format="wav")
    assert status == 200 and int(headers["Content-Length"]) == len(whole) and whole[:4] == b"RIFF"
    assert "Transfer-Encoding" not in headers
    status, _, _ = speak(base, lang_code="z", language="zh", download_format="pcm", return_download_link=False)
    assert status == 200 and graph.texts[-1][1][m.LANGUAGE] == "zh"


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"lang_code": "e"}, "lang_code", "not supported"),
        ({"lang_code": "j", "language": "en"}, "lang_code", "send one of them"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"return_download_link": True}, "return_download_link", "keeps no files"),
        ({"download_format": "mp3"}, "download_format", "keeps no files"),
        ({"return_timestamps": True}, "return_timestamps", "timestamps"),
        ({"ssml": True}, "ssml", "SSML"),
        ({"volume_multiplier": 0}, "volume_multiplier", "(0.0, 4.0]"),
        ({"normalization_options": {"normalize": False}}, "normalization_options", "cannot be turned off"),
        ({"normalization_options": {"lowercase": True}}, "normalization_options", "unknown normalization"),
        ({"normalization_options": "off"}, "normalization_options", "must be an object"),
    ],
)
def test_kokoro_fields_this_server_cannot_honour_get_a_400_with_the_reason(base_graph, fields, param, words):
    base, graph = base_graph
    status, _, body = speak(base, **fields)
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == param and words in error["message"], error
    assert not graph.texts


def test_kokoro_stream_false_failure_is_a_json_error_not_a_cut_file(base_graph):
    base, graph = base_graph
    graph.fail_texts["Fine. Broken."], graph.fail_from_segment = "GPT decoding failed: boom", 1
    status, _, body = speak(base, input="Fine. Broken.", stream=False)
    assert status == 500 and "boom" in json.loads(body)["error"]["message"]
