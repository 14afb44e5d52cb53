"""torch's intra-op threads lowered for a block of work, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads lowered to ``threads`` inside the block (None, or not fewer than now:
    unchanged). The thread count is the process's: nothing else in it may run torch work meanwhile."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
