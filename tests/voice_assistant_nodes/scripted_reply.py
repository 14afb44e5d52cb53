"""A stand-in for a node that answers each input with text: dora-distil-whisper (a transcript per
utterance from dora-vad) or dora-qwen (a reply per transcript).

Env ``REPLIES``: JSON list of strings, sent in order, one per input message on any input (later
inputs get none). ``REPLY_REPORT``: JSON file listing what arrived (input id, Arrow type, length,
metadata) and what was sent.
"""

import json
import os
import time

import pyarrow as pa
from dora import Node


def main() -> None:
    replies = json.loads(os.environ["REPLIES"])
    node = Node()
    log = []
    for event in node:
        if event["type"] != "INPUT":
            continue
        value = event["value"]
        entry = {"at": time.time(), "input": event["id"], "type": str(value.type), "length": len(value)}
        entry["metadata"] = {k: v for k, v in (event["metadata"] or {}).items() if isinstance(v, (int, float, str))}
        if len(log) < len(replies):
            entry["reply"] = replies[len(log)]
            node.send_output("text", pa.array([entry["reply"]]))
        log.append(entry)
    with open(os.environ["REPLY_REPORT"], "w", encoding="utf-8") as f:
        json.dump(log, f)


if __name__ == "__main__":
    main()
