"""A stand-in for a streaming LLM node: speaks a script as small text deltas, slowly.

Env ``LLM_SCRIPT``: JSON list of turns ``{"sentences": [...], "voice": name (optional)}``;
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
        metadata = {"voice": turn["voice"]} if turn.get("voice") else {}
        for sentence_index, sentence in enumerate(turn["sentences"]):
            if sentence_index or turn_index:
                time.sleep(gap)
            sent.append({"turn": turn_index, "sentence": sentence_index, "at": time.time()})
            for i in range(0, len(sentence), DELTA_CHARS):
                node.send_output("text", pa.array([sentence[i : i + DELTA_CHARS]]), metadata)
                time.sleep(0.02)
        node.send_output("text", pa.array([""]), metadata | {"final": True})
        sent.append({"turn": turn_index, "end": True, "at": time.time()})
    with open(os.environ["LLM_REPORT"], "w", encoding="utf-8") as f:
        json.dump(sent, f)


if __name__ == "__main__":
    main()
