"""The web page in headless Chromium against the server with a stand-in graph (no dora): the format
choice plays every compressed format, and the stop button silences playback and cancels the
request in the graph. (tests/test_openai_server_e2e.py plays pcm from the real graph.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request

import pytest
from test_openai_server import served  # noqa: F401  (the fixture)
from test_openai_server_e2e import CHROMIUM, DevTools, chromium_flags, page_tools

from dora_gpt_sovits import messages as m

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"),
]


def in_chromium(base: str, profile, script) -> dict:
    """Open the page in headless Chromium and run ``script(tools)`` over the DevTools protocol."""
    browser = subprocess.Popen(
        [CHROMIUM, *chromium_flags(profile), "--remote-debugging-port=0", base + "/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(attach(profile, script))
    finally:
        browser.terminate()
        browser.wait(timeout=30)


async def attach(profile, script) -> dict:
    async with page_tools(profile) as tools:
        return await script(tools)


async def speak_in(tools: DevTools, response_format: str) -> dict:
    await tools.evaluate(f"document.querySelector('#format').value = {response_format!r}")
    await tools.click("#speak")
    await tools.wait_for("window.gsvPage.done", 60)
    return json.loads(await tools.evaluate("JSON.stringify(window.gsvPage)"))


def test_the_format_choice_plays_each_compressed_format(served, tmp_path):  # noqa: F811
    base, graph = served

    async def script(tools):
        return {f: await speak_in(tools, f) for f in ("mp3", "aac", "opus", "flac", "wav")}

    pages = in_chromium(base, tmp_path / "profile", script)
    for response_format, page in pages.items():
        assert page["error"] is None and page["format"] == response_format, page
        # The stand-in speaks one sentence of 0.5 s; a codec may add its priming (< 0.1 s).
        assert 0.45 < page["playedSeconds"] < 0.65 and page["bytes"] > 0, page
    assert pages["mp3"]["streamedPlayback"] and pages["wav"]["streamedPlayback"]  # Media Source / Web Audio
    assert [md[m.VOICE] for _, md in graph.texts] == ["default"] * 5


def test_stop_silences_playback_and_cancels_the_request(served, tmp_path):  # noqa: F811
    base, graph = served
    graph.seconds, graph.delay = 20.0, 0.05  # 200 chunks over 10 s: far from done when stopped

    async def script(tools):
        pages = {}
        for response_format in ("pcm", "mp3"):
            await tools.evaluate(f"document.querySelector('#format').value = {response_format!r}")
            await tools.click("#speak")
            await tools.wait_for("window.gsvPage.chunks > 2 && window.gsvPage.playing", 30)
            await tools.click("#stop")
            await tools.wait_for("window.gsvPage.done", 30)
            pages[response_format] = json.loads(
                await tools.evaluate(
                    "JSON.stringify(Object.assign({}, window.gsvPage, {paused: document.querySelector('#player').paused,"
                    " status: document.querySelector('#status').textContent}))"
                )
            )
            pages[response_format]["server"] = await asyncio.to_thread(last_request_when_settled, base)
        return pages

    pages = in_chromium(base, tmp_path / "profile", script)
    for response_format, page in pages.items():
        assert page["stopped"] and not page["playing"] and page["paused"] and page["error"] is None, page
        assert page["status"] == "stopped", page
        assert page["server"]["status"] == "cancelled", (response_format, page["server"])
    cancelled = {md[m.UTTERANCE_ID] for md in graph.controls}
    assert {md[m.UTTERANCE_ID] for _, md in graph.texts} <= cancelled  # each utterance was stopped in the graph


def last_request_when_settled(base: str) -> dict:
    deadline = time.time() + 10
    while True:
        with urllib.request.urlopen(base + "/v1/requests/last", timeout=10) as response:
            last = json.loads(response.read())
        if last["status"] != "running" or time.time() > deadline:
            return last
        time.sleep(0.1)
