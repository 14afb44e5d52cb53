#!/usr/bin/env python3
"""Benchmark: speed per stage and end to end, TTFA through the dataflow, side by side with upstream.

python scripts/bench.py --help
"""

from dora_gpt_sovits.benchmark.cli import main

if __name__ == "__main__":
    main()
