"""text-input node: puts text requests into the graph.

Outputs: ``text`` (Utf8[1], metadata utterance_id, language, voice, text_received_at) and
``control`` (Utf8[1] ``stop``, metadata ``cancel_before`` = the moment the stop came in, stamped with
the clock of text_received_at, and ``utterance_id`` when one utterance is named).

Modes, by environment:

* ``GSV_TEXT``: speak this one text, then finish (batch runs end by themselves);
* ``GSV_TEXT_FILE``: speak each non-empty line of the file as its own utterance, then finish;
* ``GSV_TEXT_LISTEN=127.0.0.1:9871``: a long-lived service: accept TCP connections on that address
  and speak every line received (plain text, or JSON ``{"text", "language", "voice",
  "utterance_id"}``) until ``dora stop``. A JSON line ``{"control": "stop"}`` (optionally with
  ``"utterance_id"``) is a barge-in: it goes out on ``control``. ``gsv-say`` is the matching client
  (``gsv-say --stop [--id ID]``).
* none of these: speak a built-in demo sentence.

``GSV_LANGUAGE`` (default ``auto``) and ``GSV_VOICE`` (default ``default``) set the request's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import connect

log = logging.getLogger("gsv.text-input")

DEMO_TEXT = "你好，这是 dora 数据流里的 GPT-SoVITS 语音合成。It streams audio while it is still decoding."
DEFAULT_LISTEN_PORT = 9871


@dataclass
class TextRequest:
    text: str
    language: str
    voice: str
    utterance_id: str = ""

    output_id = m.TEXT

    def to_message(self) -> tuple[Any, dict[str, Any]]:
        return m.text_array(self.text), {
            m.UTTERANCE_ID: self.utterance_id or m.new_utterance_id(),
            m.LANGUAGE: self.language,
            m.VOICE: self.voice,
            m.TEXT_RECEIVED_AT: m.now(),
        }


@dataclass
class StopRequest:
    utterance_id: str = ""

    output_id = m.CONTROL

    def to_message(self) -> tuple[Any, dict[str, Any]]:
        return m.ControlCommand(m.now(), self.utterance_id).to_message()


def parse_line(line: str, language: str, voice: str) -> TextRequest | StopRequest | None:
    """One request per line: plain text, a JSON object with text/language/voice/utterance_id, or a
    JSON control object ``{"control": "stop", "utterance_id": optional}``."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON request: {e}") from None
        if isinstance(obj, dict) and "control" in obj:
            if obj["control"] != m.STOP:
                raise ValueError(f"unknown control command {obj['control']!r} (known: {m.STOP!r})")
            return StopRequest(str(obj.get("utterance_id") or ""))
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError('a JSON request needs a string field "text"')
        return TextRequest(
            obj["text"], str(obj.get("language", language)), str(obj.get("voice", voice)), str(obj.get("utterance_id") or "")
        )
    return TextRequest(line, language, voice)


def batch_requests(env: dict[str, str]) -> list[TextRequest]:
    language, voice = env.get("GSV_LANGUAGE", "auto"), env.get("GSV_VOICE", m.DEFAULT_VOICE)
    if env.get("GSV_TEXT_FILE"):
        lines = Path(env["GSV_TEXT_FILE"]).read_text(encoding="utf-8").splitlines()
        return [r for line in lines if (r := TextRequest(line.strip(), language, voice)).text]
    return [TextRequest(env.get("GSV_TEXT") or DEMO_TEXT, language, voice)]


def parse_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or "127.0.0.1"), int(port or DEFAULT_LISTEN_PORT)


def listen_lines(node: Any, address: tuple[str, int]) -> Iterator[str]:
    """Yield lines from TCP clients while polling dora for STOP between accepts."""
    server = socket.create_server(address)
    server.settimeout(0.2)
    log.info("listening for text on %s:%d (one utterance per line; `gsv-say` sends)", *address)
    with server:
        while True:
            event = node.next(timeout=0.01)
            if event is not None and event["type"] == "STOP":
                return
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("r", encoding="utf-8", errors="replace") as reader:
                conn.settimeout(5.0)
                try:
                    yield from reader
                except (TimeoutError, OSError) as e:
                    log.warning("text client dropped: %s", e)


def main() -> None:
    env = dict(os.environ)
    node = connect()
    if env.get("GSV_TEXT_LISTEN"):
        language, voice = env.get("GSV_LANGUAGE", "auto"), env.get("GSV_VOICE", m.DEFAULT_VOICE)
        for line in listen_lines(node, parse_address(env["GSV_TEXT_LISTEN"])):
            try:
                request = parse_line(line, language, voice)
            except ValueError as e:
                log.error("ignored request: %s", e)
                continue
            if request is not None:
                data, metadata = request.to_message()
                log.info("%s %s", request.output_id, metadata.get(m.UTTERANCE_ID, "(all)"))
                node.send_output(request.output_id, data, metadata)
        return
    for request in batch_requests(env):
        data, metadata = request.to_message()
        log.info("utterance %s: %r", metadata[m.UTTERANCE_ID], request.text[:80])
        node.send_output(m.TEXT, data, metadata)


if __name__ == "__main__":
    main()
