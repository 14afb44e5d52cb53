#!/usr/bin/env python3
"""Per-stage speed on each backend (torch, onnxruntime, tensorrt), stages opened as the nodes open them.

Example: python scripts/bench_backends.py --backends torch onnxruntime --threads 2
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in the graphs: idle OpenMP threads sleep on a shared CPU

from dora_gpt_sovits.benchmark.backends import main  # noqa: E402

if __name__ == "__main__":
    main()
