"""What every model-loading node reads from its environment: device, precision, model paths.

``GSV_DEVICE``  cpu (default) or cuda / cuda:N — a missing GPU is an error, never a silent fallback.
``GSV_DTYPE``   float32 (default), float16 or bfloat16.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

import torch

from .model_paths import ModelPaths, ModelsMissing, resolve
from .node_runtime import fail

log = logging.getLogger("dora_gpt_sovits")

T = TypeVar("T")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    device_name = os.environ.get("GSV_DEVICE", "cpu")
    dtype_name = os.environ.get("GSV_DTYPE", "float32")
    if dtype_name not in DTYPES:
        fail(f"GSV_DTYPE={dtype_name!r} is not one of {sorted(DTYPES)}")
    try:
        device = torch.device(device_name)
    except RuntimeError:
        fail(f"GSV_DEVICE={device_name!r} is not a device (use cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"GSV_DEVICE={device_name} but no CUDA GPU is available to this process")
    return device, DTYPES[dtype_name]


def load_or_exit(need: tuple[str, ...]) -> ModelPaths:
    """Resolve model paths or end the node with one line naming the missing files."""
    try:
        paths = resolve(need=need)
    except ModelsMissing as e:
        fail(str(e))
    if paths.development:
        log.warning(paths.banner())
    else:
        log.info(paths.banner())
    return paths


def load_model_or_exit(load: Callable[..., T], path: os.PathLike | str, **kwargs) -> T:
    """Load one model file or end the node with one line: a corrupt, truncated, hostile (code-
    executing pickle) or unsupported-version checkpoint is a configuration error, not a traceback."""
    try:
        return load(path, **kwargs)
    except (ValueError, OSError, KeyError) as e:  # CheckpointError and ConfigError are ValueErrors
        message = str(e)
        fail(f"model file unusable: {message if str(path) in message else f'{path}: {message}'}")
