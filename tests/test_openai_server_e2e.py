"""The OpenAI-compatible server graph through the real dora CLI (tiny development model): the
official ``openai`` client streams audio, bad requests get 4xx JSON while the graph keeps serving,
concurrent requests each complete, and headless Chromium plays a request from the web page."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, dora_cli
from test_dataflow_e2e import node_env, node_processes

from dora_gpt_sovits.benchmark.dataflow import free_port

pytestmark = pytest.mark.skipif(shutil.which("dora") is None, reason="dora CLI not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TWO_SENTENCES = "你好，世界。Hello from the server."
MIN_SECONDS_PER_SENTENCE = 0.74  # the GPT's 11 forced tokens (0.44 s) + 0.3 s pause


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The graph started with `dora start --detach`; yields the base URL; stops it and checks that
    no node process is left behind."""
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    models = build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny", size="tiny", version="v2")
    port = free_port()
    env = node_env(models, GSV_HTTP_PORT=str(port), DORA_COORDINATOR_PORT="18013")

    dora = dora_cli(env)

    assert dora("up").returncode == 0
    try:
        started = dora("start", "dataflows/openai-server.yml", "--name", "openai-test", "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 400
        while not _answers(base + "/v1/models"):
            if time.time() > deadline:
                logs = dora("logs", "openai-test", "--node", "http-server")
                pytest.fail(f"server not up in 400 s: {(logs.stdout + logs.stderr)[-2000:]}")
            time.sleep(1)
        yield base
        stopped = dora("stop", "--name", "openai-test")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        deadline = time.time() + 60
        while node_processes("GSV_HTTP_PORT", str(port)):
            assert time.time() < deadline, "node processes left after dora stop"
            time.sleep(1)
    finally:
        if dora("down").returncode != 0:
            dora("down", "--force")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def speak(base: str, text: str, response_format: str = "pcm", **extra) -> tuple[bytes, float, float]:
    """Stream one request with the official client; returns (bytes, client TTFA s, client RTF)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
    started, first, parts = time.perf_counter(), None, []
    with client.audio.speech.with_streaming_response.create(
        model="gpt-sovits", voice="default", input=text, response_format=response_format, extra_body=extra or None
    ) as response:
        for part in response.iter_bytes(2048):
            first = first or time.perf_counter()
            parts.append(part)
    data = b"".join(parts)
    seconds = (len(data) - (44 if response_format == "wav" else 0)) / 2 / 24000
    return data, first - started, (time.perf_counter() - started) / max(seconds, 1e-9)


def assert_plausible(samples: np.ndarray, sentences: int) -> None:
    assert len(samples) >= sentences * MIN_SECONDS_PER_SENTENCE * 24000
    assert np.isfinite(samples).all() and np.sqrt(np.mean(samples**2)) > 1e-3


def test_openai_client_streams_speech_and_bad_requests_do_not_hurt_the_graph(server):
    from openai import BadRequestError

    speak(server, "预热。")  # the first request pays one-off costs in every node
    pcm, ttfa, rtf = speak(server, TWO_SENTENCES, top_k=10, temperature=0.9)
    assert_plausible(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, sentences=2)
    wav_bytes, wav_ttfa, wav_rtf = speak(server, TWO_SENTENCES, response_format="wav", speed=1.2)
    wav, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    assert rate == 24000
    assert_plausible(wav, sentences=2)
    with urllib.request.urlopen(server + "/v1/requests/last", timeout=30) as response:
        last = json.loads(response.read())
    assert last["status"] == "completed" and last["ttfa_seconds"] > 0 and last["rtf"] > 0
    print(
        f"\nclient pcm: TTFA {ttfa:.3f} s, RTF {rtf:.3f}; wav: TTFA {wav_ttfa:.3f} s, RTF {wav_rtf:.3f}; "
        f"server: TTFA {last['ttfa_seconds']:.3f} s, RTF {last['rtf']:.3f}, {last['audio_seconds']:.2f} s audio"
    )
    for fields in [{"input": ""}, {"voice": "nobody"}, {"instructions": "Whisper."}, {"extra_body": {"top_p": 7}}]:
        with pytest.raises(BadRequestError) as caught:
            _bad_request(server, fields)
        assert caught.value.status_code == 400 and caught.value.body["message"], fields
    # The graph still serves after the refusals.
    assert_plausible(np.frombuffer(speak(server, "还在。")[0], "<i2").astype(np.float32) / 32768, sentences=1)


def _bad_request(base: str, fields: dict) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    args = {"model": "gpt-sovits", "voice": "default", "input": "好。", "response_format": "pcm"} | fields
    with client.audio.speech.with_streaming_response.create(**args) as response:
        response.read()


def test_the_default_mp3_and_flac_carry_the_graphs_audio(server):
    """The same request (GSV_SEED fixes the sampling) as wav, as flac (equal sample for sample) and
    with no response_format (mp3, OpenAI's default: the same sound, tests/test_openai_formats.py)."""
    from openai import OpenAI
    from test_openai_formats import assert_same_sound, decode

    wav = decode(speak(server, TWO_SENTENCES, response_format="wav")[0], "wav")
    assert_plausible(wav, sentences=2)
    assert_same_sound(decode(speak(server, TWO_SENTENCES, response_format="flac")[0], "flac"), wav, "flac")
    client = OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="default", input=TWO_SENTENCES
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        assert_same_sound(decode(response.read(), "mp3"), wav, "mp3")


def test_three_concurrent_requests_each_get_complete_audio(server):
    texts = ["第一个请求。它有两句。", "Second request.", "第三个。Three, with two languages."]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda t: speak(server, t)[0], texts))
    for sentences, pcm in zip([2, 1, 2], results):
        assert_plausible(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, sentences)


# ---- the web page in headless Chromium, driven over the DevTools protocol --------------------------
class DevTools:
    """A minimal Chrome DevTools Protocol client over aiohttp's websocket."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=120)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float):
        deadline = time.monotonic() + seconds
        while not (value := await self.evaluate(expression)):
            assert time.monotonic() < deadline, f"page never satisfied {expression!r}"
            await asyncio.sleep(0.2)
        return value

    async def click(self, selector: str) -> None:
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def chromium_flags(profile: Path) -> list[str]:
    flags = [
        "--headless",
        "--disable-gpu",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
        "--window-size=900,820",
        "--no-first-run",
    ]
    return flags + (["--no-sandbox"] if os.geteuid() == 0 else [])  # Chromium refuses root without it


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_web_page_plays_a_request_in_headless_chromium(server, tmp_path):
    out = REPO / "out"
    out.mkdir(exist_ok=True)
    browser = subprocess.Popen(
        [CHROMIUM, *chromium_flags(tmp_path / "profile"), "--remote-debugging-port=0", server + "/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = asyncio.run(drive_page(tmp_path / "profile", out))
    finally:
        browser.terminate()
        browser.wait(timeout=30)
    assert page["error"] is None and page["scheduledSamples"] >= 2 * MIN_SECONDS_PER_SENTENCE * 24000
    assert page["ttfa_text"].endswith(" ms") and float(page["rtf_text"]) > 0
    print(f"\nbrowser: TTFA {page['ttfaMs']:.0f} ms, RTF {page['rtf']:.3f}, {page['chunks']} chunks scheduled")
    # The page as a plain headless screenshot, for people to look at.
    shot = out / "openai-server-page.png"
    subprocess.run(
        [CHROMIUM, *chromium_flags(tmp_path / "shot-profile"), f"--screenshot={shot}", server + "/"],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000


@contextlib.asynccontextmanager
async def page_tools(profile: Path):
    """DevTools on the page of the Chromium started with ``--remote-debugging-port=0`` and this
    profile, once the page has listed its voices."""
    import aiohttp

    active_port = profile / "DevToolsActivePort"
    for _ in range(300):
        if active_port.exists() and active_port.read_text().strip():
            break
        await asyncio.sleep(0.2)
    port = int(active_port.read_text().split()[0])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            target = next(t for t in await response.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools.wait_for(
                "document.querySelector('#voice') && document.querySelector('#voice').options.length > 0", 60
            )
            yield tools


async def drive_page(profile: Path, out: Path) -> dict:
    async with page_tools(profile) as tools:
        await tools.click("#text")
        await tools.evaluate("document.querySelector('#text').select()")
        await tools.call("Input.insertText", text=TWO_SENTENCES)
        assert await tools.evaluate("document.querySelector('#text').value") == TWO_SENTENCES
        await tools.click("#speak")
        await tools.wait_for("window.gsvPage.done", 300)
        page = await tools.evaluate(
            "JSON.stringify(Object.assign({}, window.gsvPage, {"
            "ttfa_text: document.querySelector('#ttfa').textContent,"
            "rtf_text: document.querySelector('#rtf').textContent}))"
        )
        shot = await tools.call("Page.captureScreenshot", format="png")
        (out / "openai-server-page-after-speak.png").write_bytes(base64.b64decode(shot["data"]))
    return json.loads(page)
