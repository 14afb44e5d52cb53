"""level-meter operator: peak and RMS of every audio chunk, run in dora's runtime node.

Input ``audio`` (Float32 mono); output ``level`` (Float32[2] = peak, RMS; same metadata). It warns
once per utterance when the peak exceeds what dora-pyaudio can play: that sink scales floats by
70000 into int16 without clipping, so |x| > 0.468 wraps around and crackles.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from dora import DoraStatus

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.audio.limiter import PYAUDIO_SAFE_PEAK

log = logging.getLogger("gsv.level-meter")


def chunk_level(samples: np.ndarray) -> tuple[float, float]:
    if samples.size == 0:
        return 0.0, 0.0
    return float(np.max(np.abs(samples))), float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


class Operator:
    def __init__(self) -> None:
        self.warned: set[str] = set()

    def on_event(self, dora_event: dict, send_output) -> DoraStatus:
        if dora_event["type"] == "INPUT" and dora_event["id"] == m.AUDIO:
            metadata = dict(dora_event.get("metadata") or {})
            try:
                samples = m.numpy_view(dora_event["value"], np.float32, m.AUDIO)
            except m.MessageError as e:
                log.error("level-meter: %s", e)
                return DoraStatus.CONTINUE
            peak, rms = chunk_level(samples)
            utterance = str(metadata.get(m.UTTERANCE_ID, ""))
            if peak > PYAUDIO_SAFE_PEAK and utterance not in self.warned:
                self.warned.add(utterance)
                log.warning(
                    "utterance %s peaks at %.2f: above %.3f, dora-pyaudio would wrap it",
                    utterance,
                    peak,
                    PYAUDIO_SAFE_PEAK,
                )
            metadata.pop("timestamp", None)
            send_output("level", pa.array([peak, rms], type=pa.float32()), metadata)
        return DoraStatus.CONTINUE
