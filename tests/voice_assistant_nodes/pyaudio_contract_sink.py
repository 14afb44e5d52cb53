"""A stand-in for dora-pyaudio that checks its contract on every ``audio`` message.

dora-pyaudio reads ``event["value"].to_numpy()`` (a flat primitive array), the rate from metadata
``sample_rate``, plays one second per message and casts floats with ``x * 70000`` to int16 without
clipping. Every message is recorded in ``SINK_REPORT`` (JSON) with what was checked.
"""

import json
import os
import time

import numpy as np
import pyarrow as pa
from dora import Node

PYAUDIO_SAFE_PEAK = 32767 / 70000


def check(value, metadata) -> dict:
    record = {"at": time.time(), "problems": []}
    if not isinstance(value, pa.Array) or value.type != pa.float32():
        record["problems"].append(f"not a flat float32 array: {getattr(value, 'type', type(value))}")
        return record
    samples = value.to_numpy()  # as dora-pyaudio: raises for list/struct arrays
    rate = metadata.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        record["problems"].append(f"sample_rate metadata missing or not an int: {rate!r}")
        rate = 16000
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if samples.size > rate:
        record["problems"].append(f"{samples.size} samples: more than 1 s at {rate} Hz")
    if peak > PYAUDIO_SAFE_PEAK or not np.isfinite(samples).all():
        record["problems"].append(f"peak {peak:.3f} wraps in dora-pyaudio's int16 cast")
    record.update(
        samples=int(samples.size),
        sample_rate=rate,
        peak=peak,
        rms=float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0,
        utterance_id=str(metadata.get("utterance_id", "")),
        voice=str(metadata.get("voice", "")),
        error=str(metadata.get("error", "")),
        flush=bool(metadata.get("flush", False)),
    )
    return record


def main() -> None:
    node = Node()
    records = []
    for event in node:
        if event["type"] == "INPUT" and event["id"] == "audio":
            records.append(check(event["value"], dict(event["metadata"] or {})))
    with open(os.environ["SINK_REPORT"], "w", encoding="utf-8") as f:
        json.dump(records, f)


if __name__ == "__main__":
    main()
