"""jieba_fast word segmentation, loaded once per process.

Loading the dictionary takes a second or two, so it happens on first use, not on import.
"""

from __future__ import annotations

import functools
import logging


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba_fast
    import jieba_fast.posseg

    jieba_fast.setLogLevel(logging.CRITICAL)
    jieba_fast.initialize()
    return jieba_fast, jieba_fast.posseg


def pos_cut(text: str) -> list[tuple[str, str]]:
    """Words with their jieba POS tags (ICTCLAS-style: n, v, a, r, m, x, eng, ...)."""
    return [(p.word, p.flag) for p in _jieba()[1].lcut(text)]


def cut(text: str) -> list[str]:
    """Words without POS tags (faster than `pos_cut`): where a long text may be cut."""
    return _jieba()[0].lcut(text)


def cut_for_search(text: str) -> list[str]:
    return list(_jieba()[0].cut_for_search(text))


def warm_up() -> None:
    _jieba()
