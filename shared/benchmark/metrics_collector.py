"""bench-metrics node: appends every ``audio-sink/metrics`` message to a JSON-lines file.

Added by the benchmark to a generated copy of the service graph; ``GSV_BENCH_METRICS`` names the
file. One line per finished utterance, flushed at once, so the benchmark can wait on it.
"""

from __future__ import annotations

import json
import os
import sys
import time

from dora_gpt_sovits import messages as m


def node_spec(metrics_path: str | os.PathLike, node_id: str = "bench-metrics") -> dict:
    """This node as a dataflow YAML entry reading the sink's ``metrics`` losslessly."""
    return {
        "id": node_id,
        "path": sys.executable,
        "args": "-m dora_gpt_sovits.benchmark.metrics_collector",
        "inputs": {"metrics": {"source": "audio-sink/metrics", "queue_size": 1000, "queue_policy": "backpressure"}},
        "env": {"GSV_BENCH_METRICS": str(metrics_path)},
    }


def main() -> None:
    from dora import Node

    path = os.environ["GSV_BENCH_METRICS"]
    node = Node()
    with open(path, "a", encoding="utf-8") as out:
        for event in node:
            if event["type"] == "INPUT" and event["id"] == "metrics":
                report = json.loads(m.read_text(event["value"], "metrics"))
                report["collected_at"] = time.time()
                out.write(json.dumps(report, ensure_ascii=False) + "\n")
                out.flush()
            elif event["type"] == "STOP":
                break


if __name__ == "__main__":
    main()
