"""``gsv-say``: send text to a long-running graph whose text-input listens (GSV_TEXT_LISTEN)."""

from __future__ import annotations

import argparse
import json
import socket
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("text", nargs="?", help="what to say")
    parser.add_argument("--address", default="127.0.0.1:9871", help="host:port of the text-input node")
    parser.add_argument("--language", help="language code (default: the node's GSV_LANGUAGE)")
    parser.add_argument("--voice", help="voice name (default: the node's GSV_VOICE)")
    parser.add_argument(
        "--id", help="utterance id for the text (default: made up by the node), or the one --stop cancels"
    )
    parser.add_argument("--stop", action="store_true", help="barge-in: stop every utterance in flight (or only --id)")
    args = parser.parse_args(argv)
    if args.stop == bool(args.text):
        parser.error("give either a text to say or --stop")
    options = (("language", args.language), ("voice", args.voice), ("utterance_id", args.id))
    request = ({"control": "stop"} if args.stop else {"text": args.text}) | {k: v for k, v in options if v}
    host, _, port = args.address.rpartition(":")
    try:
        line = (json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise SystemExit(f"error: the arguments are not valid UTF-8 ({e}); nothing was sent") from None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5) as conn:
            conn.sendall(line)
    except OSError as e:
        raise SystemExit(
            f"error: no text-input listening on {args.address} ({e}); start dataflows/service.yml"
        ) from None


if __name__ == "__main__":
    main(sys.argv[1:])
