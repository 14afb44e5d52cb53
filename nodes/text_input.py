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

One bad request never stops the node: a line that is not a valid request (malformed or too deeply
nested JSON, a lone surrogate such as ``\ud800`` in a field, which no UTF-8 message can carry, a
non-string field, a line over ``MAX_LINE_CHARS``) is refused with one log line naming why, and the
next line is served. Refused, not repaired: a replaced character would be spoken as something the
client did not send. In the YAML the node listens to a timer only so that dora restarts it if it
dies anyway (dora never restarts a node without inputs).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import connect
from dora_gpt_sovits.settings import TextInputSettings, from_env_or_exit

log = logging.getLogger("gsv.text-input")

DEMO_TEXT = "你好，这是 dora 数据流里的 GPT-SoVITS 语音合成。It streams audio while it is still decoding."
DEFAULT_LISTEN_PORT = 9871
# A longer line is refused unread: without a bound one client that never sends a newline could grow
# the node's memory without limit. Ten times the 100,000-character text of docs/reliability.md.
MAX_LINE_CHARS = 1_000_000


TextRequest = m.TextRequest  # the text message (stamped with a new utterance_id and the time when sent)


@dataclass
class StopRequest:
    utterance_id: str = ""

    output_id = m.CONTROL

    def to_message(self) -> tuple[Any, dict[str, Any]]:
        return m.ControlCommand(m.now(), self.utterance_id).to_message()


def parse_line(line: str, language: str, voice: str) -> TextRequest | StopRequest | None:
    """One request per line: plain text, a JSON object with text/language/voice/utterance_id/listener, or a
    JSON control object ``{"control": "stop", "utterance_id": optional}``. Raises ValueError (a
    MessageError for text that cannot be sent) naming what is wrong."""
    line = line.strip()
    if not line:
        return None
    if len(line) > MAX_LINE_CHARS:
        raise ValueError(f"the line has {len(line)} characters; the limit is {MAX_LINE_CHARS}")
    if not line.startswith("{"):
        return TextRequest(_sendable(line, "the text"), language, voice)
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError("malformed JSON request: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and Python's refusal of integers over 4300 digits
        raise ValueError(f"malformed JSON request: {e}") from None
    if isinstance(obj, dict) and "control" in obj:
        if obj["control"] != m.STOP:
            raise ValueError(f"unknown control command {_short(obj['control'])} (known: {m.STOP!r})")
        return StopRequest(_field(obj, "utterance_id", ""))
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValueError('a JSON request needs a string field "text"')
    return TextRequest(
        _sendable(obj["text"], "the text"),
        _field(obj, "language", language),
        _field(obj, "voice", voice),
        _field(obj, "utterance_id", ""),
        options=m.RequestOptions(listener=_field(obj, "listener", "") or None),  # who hears it: a room's sink
    )


def _field(obj: dict[str, Any], name: str, default: str) -> str:
    """An optional string field (an utterance id may be a JSON integer)."""
    value = obj.get(name)
    if value is None or value == "":
        return default
    if name == "utterance_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f'"{name}" must be a string, got {_short(value)}')
    return _sendable(value, f'"{name}"')


def _sendable(text: str, what: str) -> str:
    if (problem := m.unicode_problem(text)) is not None:
        raise m.MessageError(f"{what} cannot be sent: {problem}")
    return text


def _short(value: Any) -> str:
    text = ascii(value)  # ascii(): a lone surrogate must not break the log line that reports it
    return text if len(text) <= 80 else text[:77] + "..."


def batch_requests(settings: TextInputSettings | Mapping[str, str]) -> list[TextRequest]:
    if not isinstance(settings, TextInputSettings):
        settings = TextInputSettings.from_env(settings)
    language, voice = settings.language, settings.voice
    if settings.text_file is not None:
        lines = Path(settings.text_file).read_text(encoding="utf-8").splitlines()
        return [r for line in lines if (r := TextRequest(line.strip(), language, voice)).text]
    return [TextRequest(settings.text or DEMO_TEXT, language, voice)]


def handle_line(node: Any, line: str, language: str, voice: str) -> bool:
    """Parse one line and send its request; a bad one is refused with a log line. Nothing escapes:
    the node must go on serving the next line whatever this one held. True when something was sent."""
    try:
        request = parse_line(line, language, voice)
        if request is None:
            return False
        data, metadata = request.to_message()
        node.send_output(request.output_id, data, metadata)
    except ValueError as e:  # includes MessageError: the request's own fault, said in one line
        log.error("ignored request: %s", e)
        return False
    except Exception:  # a fault of ours or of dora's; still only this request is lost
        log.exception("ignored request %s: it could not be sent", _short(line.strip()))
        return False
    log.info("%s %s", request.output_id, metadata.get(m.UTTERANCE_ID, "(all)"))
    return True


HEALTH = "health"  # the input that brings the sink's metrics back: probe replies (shared/health.py)


def health_timeout(line: str) -> float | None:
    """``{"health": SECONDS}`` (or ``true``: the default) asks for an end-to-end probe; None otherwise."""
    if not line.lstrip().startswith('{"health"'):
        return None
    try:
        value = json.loads(line)[HEALTH]
    except (ValueError, KeyError, TypeError):
        return None
    if value is True:
        return health.DEFAULT_TIMEOUT_S
    return float(value) if isinstance(value, (int, float)) and 0 < value <= 600 else None


class GraphStopping(Exception):
    """dora asked the node to stop while a health check was waiting for its answer."""


def answer_health(node: Any, timeout_s: float) -> dict[str, Any]:
    """Send a probe down the path and wait for the sink's answer on ``health``."""
    try:
        inputs = (node.node_config() or {}).get("inputs") or {}
    except (AttributeError, RuntimeError, TypeError):  # dora will not say: try anyway
        inputs = {HEALTH: None}
    if HEALTH not in inputs:
        return {"ok": False, "error": f"text-input has no '{HEALTH}' input: wire audio-sink/metrics to it"}

    def next_probe_reply(timeout: float) -> dict[str, Any] | None:
        event = node.next(timeout=timeout)
        if event is not None and event["type"] == "STOP":
            raise GraphStopping
        if event is not None and event["type"] == "INPUT" and event["id"] == HEALTH:
            metadata = dict(event.get("metadata") or {})
            return metadata if health.is_probe(metadata) else None
        return None

    report = health.check(lambda data, md: node.send_output(m.TEXT, data, md), next_probe_reply, timeout_s)
    log.info("health: %s", json.dumps(report))
    return report


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
                    for line in bounded_lines(reader, MAX_LINE_CHARS):
                        if (timeout := health_timeout(line)) is not None:  # answered on this connection
                            try:
                                report = answer_health(node, timeout)
                            except GraphStopping:
                                conn.sendall(b'{"ok": false, "error": "the graph is stopping"}\n')
                                return
                            conn.sendall((json.dumps(report) + "\n").encode())
                            continue
                        yield line
                except (TimeoutError, OSError) as e:
                    log.warning("text client dropped: %s", e)


def bounded_lines(reader: Any, limit: int) -> Iterator[str]:
    """The reader's lines; a longer one is skipped to its end, with one log line, instead of read whole."""
    while line := reader.readline(limit + 1):
        if len(line) <= limit or line.endswith("\n"):
            yield line
            continue
        while (rest := reader.readline(limit + 1)) and not rest.endswith("\n"):
            pass
        log.error("ignored request: a line of more than %d characters", limit)


def main() -> None:
    settings = from_env_or_exit(TextInputSettings)
    node = connect()
    if settings.listen:
        for line in listen_lines(node, parse_address(settings.listen)):
            handle_line(node, line, settings.language, settings.voice)
        return
    for request in batch_requests(settings):
        try:
            data, metadata = request.to_message()
        except m.MessageError as e:  # e.g. GSV_TEXT with bytes that are not UTF-8
            log.error("skipped text %s: %s", _short(request.text[:80]), e)
            continue
        log.info("utterance %s: %r", metadata[m.UTTERANCE_ID], request.text[:80])
        node.send_output(m.TEXT, data, metadata)


if __name__ == "__main__":
    main()
