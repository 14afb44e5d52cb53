"""Benchmark suite: per-stage and end-to-end speed, the real dataflow's TTFA, and upstream side by side.

Entry point: ``scripts/bench.py`` (``python -m dora_gpt_sovits.benchmark``); see :mod:`.cli`.
"""

from pathlib import Path


def absolute_path(text: str) -> Path:
    """An argparse ``type`` for folders and files a graph's nodes read or write: absolute, since the
    nodes run in folders of their own (a relative one is looked for, or written, in the wrong place).
    Here, not in a submodule: the scripts' ``--help`` must not wait for torch."""
    return Path(text).expanduser().resolve()
