"""Fuzz: any body POSTed to the speech endpoint gets a prompt answer in the API's shape.

Arbitrary JSON (every field of the request with any JSON value: huge integers, non-finite floats,
lone surrogates, nested lists and objects), arbitrary top-level JSON and arbitrary bytes go to the
real aiohttp server in front of a stand-in graph. Each answer is either 200 with audio or a 4xx
with OpenAI's error JSON — never a 500, never plain text, never a wait past the client's timeout —
and no request leaves its route open in the router. Bounded: a few seconds.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_openai_server import VOICES, FakeGraph, Voice

from dora_gpt_sovits.openai_api.app import HttpServer, create_app
from dora_gpt_sovits.openai_api.bridge import GraphBridge
from dora_gpt_sovits.openai_api.config import ServerConfig
from dora_gpt_sovits.openai_api.schema import KNOWN_FIELDS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT_TIMEOUT_S = 30  # "never a hang": a request that takes longer fails the test

SURROGATES = st.sampled_from(["\ud800", "\udfff", "x\ud83d", "\udc80 hi"])
TEXT = st.one_of(st.text(max_size=12), SURROGATES, st.builds(str.__add__, st.text(max_size=6), SURROGATES))
NUMBERS = st.one_of(
    st.integers(),
    st.builds(lambda e: 10**e, st.integers(19, 400)),
    st.builds(lambda e: -(10**e), st.integers(19, 60)),
    st.floats(allow_nan=True, allow_infinity=True),  # json.dumps writes NaN / Infinity, which Python's parser takes
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
# Mostly plausible values per field, so that examples also get past the first check.
PLAUSIBLE = {
    "input": st.one_of(st.sampled_from(["Hi.", "One. Two.", "你好。"]), TEXT),
    "voice": st.one_of(st.sampled_from(VOICES), st.fixed_dictionaries({"id": st.sampled_from(VOICES)}), TEXT),
    "model": st.sampled_from(["gpt-sovits", "tts-1", "whisper-1"]),
    "response_format": st.sampled_from(["wav", "pcm", "mp3"]),
    "language": st.sampled_from(["auto", "zh", "en", "ja"]),
    "stream_format": st.sampled_from(["audio", "sse"]),
    "speed": st.one_of(st.floats(0.1, 5.0), NUMBERS),
    "top_k": st.one_of(st.integers(-2, 1100), NUMBERS),
    "top_p": st.one_of(st.floats(0.0, 1.2), NUMBERS),
    "temperature": st.one_of(st.floats(0.0, 2.5), NUMBERS),
    "instructions": TEXT,
}
FIELDS = st.fixed_dictionaries(
    {"input": st.one_of(PLAUSIBLE["input"], JSON_VALUES), "voice": PLAUSIBLE["voice"]},
    optional={
        name: st.one_of(PLAUSIBLE.get(name, JSON_VALUES), JSON_VALUES)
        for name in sorted(KNOWN_FIELDS - {"input", "voice"})
    },
)
BODIES = st.one_of(
    FIELDS.map(lambda body: json.dumps(body).encode()),  # ensure_ascii: a lone surrogate travels as \ud800
    st.tuples(FIELDS, TEXT, JSON_VALUES).map(lambda t: json.dumps(t[0] | {t[1]: t[2]}).encode()),  # an unknown key
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(1, 50_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(4301, 8000).map(
        lambda digits: b'{"input": "Hi.", "voice": "default", "speed": ' + b"1" * digits + b"}"
    ),
)


@pytest.fixture(scope="module")
def server():
    graph, bridge = FakeGraph(seconds_per_sentence=0.05, delay=0.0), GraphBridge()
    node_thread = threading.Thread(target=bridge.run, args=(graph,), daemon=True)
    node_thread.start()
    config = ServerConfig(port=0, max_input_chars=200)
    http_server = HttpServer(create_app(bridge, {v: Voice(v) for v in VOICES}, config), "127.0.0.1", 0)
    port = http_server.start()
    yield port, bridge
    http_server.stop()
    graph.events.put({"type": "STOP", "id": "MANUAL"})
    node_thread.join(timeout=10)


def post(port: int, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    try:
        conn.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_any_body_gets_audio_or_a_4xx_json_error_promptly(server):
    port, bridge = server

    @SETTINGS
    @given(BODIES)
    def check(body):
        status, content_type, data = post(port, body)
        if status == 200:
            assert content_type.startswith(("audio/", "text/event-stream")) and data  # sse: OpenAI's events
        else:
            assert 400 <= status < 500, (status, data[:300])
            assert content_type.startswith("application/json"), content_type
            error = json.loads(data)["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert bridge.router.active() == 0  # ended or never opened: no route left behind

    check()
