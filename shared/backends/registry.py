"""Open a stage on the configured backend, trying the explicit fallbacks (and only those) in order."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from .config import BackendChoice
from .errors import BackendError, BackendUnavailable, ExportMissing, ExportStale

log = logging.getLogger("dora_gpt_sovits.backends")

T = TypeVar("T")
# stage implementation factory per backend name
Builders = Mapping[str, Callable[[BackendChoice], T]]

# What allows the next fallback: something missing on this machine. A wrong value, a broken model
# or any other error stops the node at once, so a misconfiguration is never hidden by a fallback.
RECOVERABLE = (BackendUnavailable, ExportMissing, ExportStale)


def open_stage(stage: str, choice: BackendChoice, builders: Builders) -> tuple[T, BackendChoice]:
    """Build ``stage`` with the first usable alternative of ``choice``; returns it and the choice used."""
    reasons = []
    for alt in choice.alternatives():
        if alt.backend not in builders:
            reason = f"{stage} has no {alt.backend} backend (available: {', '.join(builders)})"
            if alt is choice:
                raise BackendError(reason)
            reasons.append(reason)
            continue
        try:
            built = builders[alt.backend](alt)
        except RECOVERABLE as e:
            reasons.append(f"{alt.label}: {e}")
            if alt is not choice.alternatives()[-1]:
                log.warning("%s: %s unavailable (%s); falling back as GSV_BACKEND_FALLBACK allows", stage, alt.label, e)
            continue
        if alt is not choice:
            log.warning("%s runs on %s instead of %s (GSV_BACKEND_FALLBACK)", stage, alt.label, choice.label)
        return built, alt
    hint = "" if choice.fallback else " (set GSV_BACKEND_FALLBACK, e.g. 'torch', to allow another backend)"
    raise BackendUnavailable(f"{stage}: " + "; ".join(reasons) + hint)
