"""Per-voice model weights: which loaded model serves a voice, with a small LRU of extra models.

GPT-SoVITS users fine-tune a GPT ``.ckpt`` and a SoVITS ``.pth`` per speaker. A voice may name its
own files (``voices.yml``: ``gpt_weights``, ``sovits_weights``); the reference node passes the
paths along with the voice's parts (metadata ``weights``), and the gpt, vocoder and reference nodes
pick their model here. The graph's own model (from GSV_MODEL_DIR / GSV_GPT_PATH / GSV_SOVITS_PATH)
is always kept; at most ``GSV_MAX_MODELS`` (default 2) other models stay loaded, least recently
used first out. Loading happens on first use, inside the node, without restarting the graph.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .settings import MAX_MODELS

log = logging.getLogger("gsv.models")

Model = TypeVar("Model")


class ModelCache(Generic[Model]):
    def __init__(
        self,
        load: Callable[[Path], Model],
        default: Model,
        default_path: Path | None = None,
        capacity: int | None = None,
        kind: str = "model",
    ):
        self.load = load
        self.default = default
        self.default_path = Path(default_path).resolve() if default_path else None
        self.capacity = max(0, capacity if capacity is not None else MAX_MODELS.read(os.environ))
        self.kind = kind
        self.loaded: OrderedDict[Path, Model] = OrderedDict()
        self.loads = 0  # how many times a file was read (tests and logs)

    def get(self, weights: str | os.PathLike[str] | None) -> Model:
        """The model for a voice's weights path; empty or None = the graph's own model."""
        if not weights:
            return self.default
        path = Path(weights).resolve()
        if path == self.default_path:
            return self.default
        if path in self.loaded:
            self.loaded.move_to_end(path)
            return self.loaded[path]
        model = self.load(path)  # raises with the reason; the caller reports it on the segment
        self.loads += 1
        if self.capacity == 0:
            return model  # nothing cached: used for this request only
        self.loaded[path] = model
        while len(self.loaded) > self.capacity:
            evicted, _ = self.loaded.popitem(last=False)
            log.info("%s %s unloaded (GSV_MAX_MODELS=%d)", self.kind, evicted.name, self.capacity)
        log.info("%s %s loaded for a voice (%d extra model(s) held)", self.kind, path.name, len(self.loaded))
        return model


def model_choice(weights: str | None) -> dict[str, str]:
    """Keyword arguments that pick a voice's own model: none for the graph's model, so stage code
    calls its model functions the same way either way (and stand-ins in tests need not know)."""
    return {"weights": weights} if weights else {}
