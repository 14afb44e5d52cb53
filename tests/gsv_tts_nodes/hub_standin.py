"""Stand-ins for the hub nodes of examples/llm/qwen-dev-interruption.yml that need hardware or weights.

``ROLE`` picks which, keeping the hub node's ports:

* ``microphone`` (dora-microphone; input ``tick``, output ``audio``): one short float32 buffer per
  entry of ``TURNS`` (JSON list of [what the user says, what the LLM replies]), then it ends;
* ``vad`` (dora-vad; input ``audio``, outputs ``audio``, ``timestamp_start``): passes each buffer on
  as a finished utterance, after a ``timestamp_start`` (Int64, as dora-vad sends when speech starts);
* ``whisper`` (dora-distil-whisper; input ``input``, output ``text``): the n-th buffer is the n-th
  turn's user text, with dora-distil-whisper's metadata;
* ``qwen`` (dora-qwen; input ``text``, output ``text``): one whole reply per message, as dora-qwen;
* ``plot`` (dora-rerun): takes its text inputs and shows nothing;
* ``pyaudio`` (dora-pyaudio; inputs ``audio``, ``timestamp_start``): checks dora-pyaudio's contract
  on every audio message (tests/voice_assistant_nodes/pyaudio_contract_sink.py) and writes each
  record, with the segment keys, to the JSON file ``SINK_REPORT``.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from dora import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "voice_assistant_nodes"))
from pyaudio_contract_sink import check  # noqa: E402


def turns() -> list[list[str]]:
    return json.loads(os.environ["TURNS"])


def microphone(node: Node) -> None:
    for _ in turns():
        node.send_output("audio", pa.array(np.zeros(1600, np.float32)))
        time.sleep(0.2)


def vad(node: Node) -> None:
    for event in node:
        if event["type"] == "INPUT":
            node.send_output("timestamp_start", pa.array([0], type=pa.int64()))
            node.send_output("audio", event["value"], {"sample_rate": 16000})


def whisper(node: Node) -> None:
    said = iter(user for user, _ in turns())
    for event in node:
        if event["type"] == "INPUT":
            node.send_output("text", pa.array([next(said)]), {"language": "english", "primitive": "text"})


def qwen(node: Node) -> None:
    replies = dict(turns())
    for event in node:
        if event["type"] == "INPUT":
            node.send_output("text", pa.array([replies[event["value"][0].as_py()]]))


def plot(node: Node) -> None:
    for _ in node:
        pass


def pyaudio(node: Node) -> None:
    records = []
    for event in node:
        if event["type"] == "INPUT" and event["id"] == "audio":
            metadata = dict(event["metadata"] or {})
            record = check(event["value"], metadata)
            keys = ("segment_index", "chunk_index", "segment_final", "utterance_final", "development_model")
            record.update({key: metadata.get(key) for key in keys})
            records.append(record)
    Path(os.environ["SINK_REPORT"]).write_text(json.dumps(records), encoding="utf-8")


if __name__ == "__main__":
    role = {"microphone": microphone, "vad": vad, "whisper": whisper, "qwen": qwen, "plot": plot, "pyaudio": pyaudio}
    role[os.environ["ROLE"]](Node())
