"""``gsv-say``: send text to a long-running graph whose text-input listens (GSV_TEXT_LISTEN).

Right after ``dora start`` nothing listens yet: text-input joins the graph, and dora lets a node
join only once every node has (the model nodes load their models first: ~50 s on 2 cores, minutes
the first time the C++ kernels are built). So ``gsv-say`` waits for the listener, saying what it
waits for, up to ``--wait`` seconds; once it accepts, the whole graph serves.

``gsv-say --health [SECONDS]`` asks text-input for an end-to-end probe through every node
(shared/health.py; the graph must wire the sink's ``metrics`` to text-input's ``health`` input, as
dataflows/distributed.yml does) and prints the answer; exit status 1 when the path does not deliver.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_ADDRESS = "127.0.0.1:9871"
DEFAULT_WAIT_S = 300.0  # a cold start on 2 busy cores, first kernel build aside
RETRY_S = 0.5
NOTE_EVERY_S = 15.0  # how often a wait says it is still waiting


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str) -> Address:
    """``host:port`` (``:port`` = 127.0.0.1, ``[::1]:port`` for IPv6) -> Address; ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address {value!r} is not host:port")
    return Address(host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port))


class NotListening(ConnectionError):
    """Nothing accepted a connection in time; the message says where, how long, and what to check."""


def connect_when_listening(
    address: Address,
    wait_s: float,
    note: Callable[[str], None] = lambda line: None,
    connect: Callable[..., socket.socket] = socket.create_connection,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> socket.socket:
    """A connection to the text-input at ``address``, retried until ``wait_s`` seconds have passed.

    A refused or timed-out connection is the graph still starting, so it is tried again; a name
    that does not resolve will never listen, so it ends the wait at once. ``note`` hears one line
    when the wait starts and one every NOTE_EVERY_S seconds while it lasts."""
    started = clock()
    noted = None
    while True:
        try:
            return connect((address.host, address.port), timeout=5)
        except socket.gaierror as e:
            raise NotListening(f"cannot resolve {address.host!r} ({e})") from None
        except OSError as e:
            waited = clock() - started
            if waited >= wait_s:
                raise NotListening(
                    f"nothing listens on {address} after {waited:.0f} s ({e}): is dataflows/service.yml running "
                    "(`dora list`)? A node that failed says why in `dora logs <name> --node <node>`"
                ) from None
        if noted is None:
            note(
                f"waiting for the graph: text-input on {address} listens once every node has loaded "
                f"its model (up to {wait_s:.0f} s, --wait)"
            )
            noted = waited
        elif waited - noted >= NOTE_EVERY_S:
            note(f"still waiting for text-input on {address} ({waited:.0f} s)")
            noted = waited
        sleep(min(RETRY_S, max(0.0, wait_s - waited)))


def ask_health(address: Address, wait_s: float, timeout_s: float) -> dict:
    """text-input's answer to an end-to-end probe through every node (shared/health.py)."""
    try:
        with connect_when_listening(address, wait_s, note=lambda text: print(text, file=sys.stderr)) as conn:
            conn.settimeout(timeout_s + 15)  # text-input answers within timeout_s, even when the path is dead
            conn.sendall((json.dumps({"health": timeout_s}) + "\n").encode())
            answer = conn.makefile("r", encoding="utf-8").readline()
    except OSError as e:
        return {"ok": False, "error": f"{e}"}
    try:
        return json.loads(answer)
    except ValueError:
        return {"ok": False, "error": f"text-input gave no health answer ({answer[:80]!r}); is it older than --health?"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gsv-say", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", nargs="?", help="what to say")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="host:port of the text-input node")
    parser.add_argument("--language", help="language code (default: the node's GSV_LANGUAGE)")
    parser.add_argument("--voice", help="voice name (default: the node's GSV_VOICE)")
    parser.add_argument(
        "--id", help="utterance id for the text (default: made up by the node), or the one --stop cancels"
    )
    parser.add_argument("--listener", help="who hears it: only the audio-sink with this GSV_SINK_LISTENER plays it")
    parser.add_argument("--stop", action="store_true", help="barge-in: stop every utterance in flight (or only --id)")
    parser.add_argument(
        "--health",
        nargs="?",
        type=float,
        const=10.0,
        metavar="SECONDS",
        help="check the whole path end to end (a probe through every node, answered by the sink; "
        "default 10 s): prints the answer, exit status 1 when the path does not deliver",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"wait up to this long for the graph to listen (default {DEFAULT_WAIT_S:.0f}; 0: try once)",
    )
    return parser


def request_line(args: argparse.Namespace) -> bytes:
    """The JSON line text-input reads (docs/messages.md); SystemExit when the arguments cannot be sent."""
    options = (
        ("language", args.language),
        ("voice", args.voice),
        ("utterance_id", args.id),
        ("listener", args.listener),
    )
    request = ({"control": "stop"} if args.stop else {"text": args.text}) | {k: v for k, v in options if v}
    try:
        return (json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise SystemExit(f"error: the arguments are not valid UTF-8 ({e}); nothing was sent") from None


def send(line: bytes, address: Address, wait_s: float) -> None:
    try:
        with connect_when_listening(address, wait_s, note=lambda text: print(text, file=sys.stderr)) as conn:
            conn.sendall(line)
    except OSError as e:  # NotListening, or the connection dropped while sending
        raise SystemExit(f"error: {e}; nothing was sent") from None


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.health is not None and (args.text or args.stop or not 0 < args.health <= 600):
        parser.error("--health takes no text nor --stop, and a timeout in (0, 600] seconds")
    if args.health is None and args.stop == bool(args.text):
        parser.error("give either a text to say or --stop")
    if not args.wait >= 0:  # also NaN
        parser.error(f"--wait must be >= 0 seconds, got {args.wait}")
    try:
        address = parse_address(args.address)
    except ValueError as e:
        parser.error(str(e))
    if args.health is not None:
        report = ask_health(address, args.wait, args.health)
        print(json.dumps(report, ensure_ascii=False))
        raise SystemExit(0 if report.get("ok") else 1)
    send(request_line(args), address, args.wait)


if __name__ == "__main__":
    main(sys.argv[1:])
