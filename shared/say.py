"""``gsv-say``: send text to a long-running graph whose text-input listens (GSV_TEXT_LISTEN)."""

from __future__ import annotations

import argparse
import json
import socket
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("text", help="what to say")
    parser.add_argument("--address", default="127.0.0.1:9871", help="host:port of the text-input node")
    parser.add_argument("--language", help="language code (default: the node's GSV_LANGUAGE)")
    parser.add_argument("--voice", help="voice name (default: the node's GSV_VOICE)")
    args = parser.parse_args(argv)
    request = {"text": args.text} | {k: v for k, v in (("language", args.language), ("voice", args.voice)) if v}
    host, _, port = args.address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5) as conn:
            conn.sendall((json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8"))
    except OSError as e:
        raise SystemExit(f"error: no text-input listening on {args.address} ({e}); start dataflows/service.yml") from None


if __name__ == "__main__":
    main(sys.argv[1:])
