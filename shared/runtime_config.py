"""What every model-loading node reads from its environment: device, precision, model paths.

``GSV_DEVICE``  cpu (default) or cuda / cuda:N — a missing GPU is an error, never a silent fallback.
``GSV_DTYPE``   float32 (default), float16 or bfloat16.
Both are parsed by ``settings`` (``ModelNodeSettings``), the one device/precision parser.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

from .model_paths import ModelPaths, ModelsMissing, resolve
from .node_runtime import fail
from .settings import DTYPES, ModelNodeSettings, SettingsError

log = logging.getLogger("dora_gpt_sovits")

T = TypeVar("T")

__all__ = ["DTYPES", "device_and_dtype", "load_model_or_exit", "load_or_exit"]


def device_and_dtype(
    settings: ModelNodeSettings | None = None, env: Mapping[str, str] | None = None
) -> tuple[torch.device, torch.dtype]:
    """The node's torch device and dtype, or the node ends with one line naming the variable."""
    try:
        settings = settings or ModelNodeSettings.from_env(env)
        return settings.torch_device(), settings.torch_dtype()
    except SettingsError as e:
        fail(str(e))


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
