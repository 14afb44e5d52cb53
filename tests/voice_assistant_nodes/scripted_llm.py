"""A stand-in for a streaming LLM node: speaks a script as small text deltas, slowly.

Env ``LLM_SCRIPT``: JSON list of turns ``{"sentences": [...], "metadata": {...} (optional, on every delta),
"gap": seconds between its sentences (optional), "pause": seconds before it (optional, default
``LLM_SENTENCE_GAP``), "barge_in_after": seconds (optional)}``; with
``barge_in_after`` the node also plays dora-vad: that long after the turn's end it sends
``timestamp_start`` (Int64, as dora-vad does when the user starts speaking);
``LLM_SENTENCE_GAP`` (s) between sentences; ``LLM_REPORT``: JSON file where the send time of every
sentence's first delta and of each turn's end is written. A turn ends with an empty delta carrying
``final: true``.
"""

import json
import os
import time

import pyarrow as pa
from dora import Node

DELTA_CHARS = 3


def main() -> None:
    script = json.loads(os.environ["LLM_SCRIPT"])
    gap = float(os.environ.get("LLM_SENTENCE_GAP", "1.5"))
    node = Node()
    sent = []
    for turn_index, turn in enumerate(script):
        metadata = {"turn_id": f"t{turn_index}"} | turn.get("metadata", {})
        for sentence_index, sentence in enumerate(turn["sentences"]):
            if sentence_index or turn_index:
                time.sleep(turn.get("gap", gap) if sentence_index else turn.get("pause", gap))
            sent.append({"turn": turn_index, "sentence": sentence_index, "at": time.time()})
            for i in range(0, len(sentence), DELTA_CHARS):
                node.send_output("text", pa.array([sentence[i : i + DELTA_CHARS]]), metadata)
                time.sleep(0.02)
        node.send_output("text", pa.array([""]), metadata | {"final": True})
        sent.append({"turn": turn_index, "end": True, "at": time.time()})
        if "barge_in_after" in turn:
            time.sleep(turn["barge_in_after"])
            node.send_output("timestamp_start", pa.array([16000], type=pa.int64()))
            sent.append({"turn": turn_index, "barge_in": True, "at": time.time()})
    with open(os.environ["LLM_REPORT"], "w", encoding="utf-8") as f:
        json.dump(sent, f)


if __name__ == "__main__":
    main()
