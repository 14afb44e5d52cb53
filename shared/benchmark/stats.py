"""Median and spread of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: what a reader compares across runs."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "spread": round(self.spread, 4)}


def summarize(values: Sequence[float]) -> Summary | None:
    values = sorted(float(v) for v in values if v is not None)
    if not values:
        return None
    if len(values) == 1:
        v = values[0]
        return Summary(v, v, v, v, v, 1)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return Summary(statistics.median(values), q[0], q[2], values[0], values[-1], len(values))


def ratio(ours: Summary | None, theirs: Summary | None) -> float | None:
    """theirs / ours on medians: > 1 means ours is faster (for times) or smaller."""
    if ours is None or theirs is None or not ours.median:
        return None
    return theirs.median / ours.median
