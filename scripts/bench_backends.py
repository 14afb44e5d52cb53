#!/usr/bin/env python3
"""Per-stage speed on each backend (torch, onnxruntime, tensorrt), stages opened as the nodes open them.

Example: python scripts/bench_backends.py --backends torch onnxruntime --threads 2
"""

from dora_gpt_sovits.benchmark.backends import main

if __name__ == "__main__":
    main()
