"""Per-node backend selection from the environment.

``GSV_BACKEND``          torch (default) | onnxruntime | tensorrt
``GSV_DEVICE``           cpu (default) | cuda | cuda:N
``GSV_DTYPE``            float32 (default) | float16 | bfloat16 (bfloat16: torch only)
``GSV_ONNX_DIR``         folder of exported graphs (scripts/export_onnx.py); default ``<GSV_MODEL_DIR>/onnx``
``GSV_BACKEND_FALLBACK`` comma-separated ``backend[@device]`` choices tried, in order, when the first
                         choice is *unavailable* (provider, GPU or export missing). Empty (default):
                         no fallback, the node stops with the reason.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..settings import PRECISIONS, SettingsError
from ..settings import parse_device as _parse_device
from .errors import BackendError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class BackendChoice:
    backend: str = "torch"
    device: str = "cpu"  # "cpu" or "cuda:N"
    dtype: str = "float32"
    onnx_dir: Path | None = None
    fallback: tuple[BackendChoice, ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BackendError(f"GSV_BACKEND={self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.dtype not in PRECISIONS:
            raise BackendError(f"GSV_DTYPE={self.dtype!r} is not one of {', '.join(PRECISIONS)}")
        if self.dtype == "bfloat16" and self.backend != "torch":
            raise BackendError(f"GSV_DTYPE=bfloat16 is only supported by GSV_BACKEND=torch, not {self.backend}")
        if self.backend == "tensorrt" and not self.is_cuda:
            raise BackendError(f"GSV_BACKEND=tensorrt needs GSV_DEVICE=cuda[:N], got {self.device!r}")

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_index(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    @property
    def label(self) -> str:
        return f"{self.backend}@{self.device}/{self.dtype}"

    def alternatives(self) -> list[BackendChoice]:
        """This choice, then each fallback, in order."""
        return [self, *self.fallback]


def parse_device(name: str) -> str:
    """``settings.parse_device`` (the one device parser), raising :class:`BackendError`."""
    try:
        return _parse_device(name)
    except SettingsError as e:
        raise BackendError(str(e)) from None


def choice_from_env(env: Mapping[str, str] | None = None) -> BackendChoice:
    """The node's backend choice; invalid values raise :class:`BackendError` with the variable named."""
    env = os.environ if env is None else env
    backend = env.get("GSV_BACKEND", "torch").strip().lower() or "torch"
    device = parse_device(env.get("GSV_DEVICE", "cpu") or "cpu")
    dtype = env.get("GSV_DTYPE", "float32").strip() or "float32"
    onnx_dir = Path(env["GSV_ONNX_DIR"]).expanduser() if env.get("GSV_ONNX_DIR") else None
    first = BackendChoice(backend, device, dtype, onnx_dir)
    fallback = []
    for item in filter(None, (s.strip() for s in env.get("GSV_BACKEND_FALLBACK", "").split(","))):
        name, _, dev = item.partition("@")
        try:
            fallback.append(
                dataclasses.replace(first, backend=name.strip().lower(), device=parse_device(dev) if dev else device)
            )
        except BackendError as e:
            raise BackendError(f"GSV_BACKEND_FALLBACK entry {item!r}: {e}") from None
    return dataclasses.replace(first, fallback=tuple(fallback))
