"""Reading official GPT-SoVITS checkpoint containers without executing pickled code.

Official files are ``torch.save`` zip archives. Two quirks matter:

* SoVITS writers may overwrite the first two bytes (``PK``) with a version tag (``00``..``06``);
  the archive is only readable once ``PK`` is put back.
* Fine-tuned SoVITS files pickle their config as upstream's ``utils.HParams`` object.

We never call the general unpickler. ``torch.load(weights_only=True)`` is PyTorch's restricted
unpickler (tensors, containers and primitives only); the one extra class admitted is our own
``HParams`` stand-in registered under upstream's name ``utils.HParams``, which only stores a
``__dict__``. Anything else in the pickle (``os.system``, ``eval``, arbitrary classes) is refused.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import torch


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, hostile or of an unsupported kind."""


class HParams:
    """Stand-in for upstream ``utils.HParams``: an attribute bag whose state is a plain dict.

    Registered under the module name ``utils`` so that pickles written by upstream resolve to it.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)


HParams.__module__ = "utils"

# First two bytes of a tagged SoVITS file -> (symbol version, model version, is_lora).
HEADER_TAGS: dict[bytes, tuple[str, str, bool]] = {
    b"00": ("v1", "v1", False),
    b"01": ("v2", "v2", False),
    b"02": ("v2", "v3", False),
    b"03": ("v2", "v3", True),
    b"04": ("v2", "v4", True),
    b"05": ("v2", "v2Pro", False),
    b"06": ("v2", "v2ProPlus", False),
}


@dataclass(frozen=True)
class RawCheckpoint:
    """The unpickled top-level object of a checkpoint plus what its header said."""

    path: str
    content: Any
    header_tag: bytes | None  # None for an ordinary ``PK`` archive
    head_bytes: bytes  # first 8192 bytes as stored, for known-file hash detection
    size_bytes: int


def to_plain(obj: Any) -> Any:
    """Turn HParams (possibly nested) into plain dicts so callers see one config shape."""
    if isinstance(obj, HParams):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def read_checkpoint(path: str | os.PathLike[str]) -> RawCheckpoint:
    """Load a ``torch.save`` archive safely, undoing the SoVITS header tag if present.

    Every failure becomes a one-line :class:`CheckpointError` naming the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < 4:
        raise CheckpointError(f"{path}: empty or truncated file ({len(data)} bytes)")

    head, tag = data[:8192], None
    if data[:2] != b"PK":
        tag = data[:2]
        if tag not in HEADER_TAGS:
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint (starts with {data[:8]!r}, expected a zip archive "
                f"or a GPT-SoVITS version tag {sorted(t.decode() for t in HEADER_TAGS)})"
            )
        data = b"PK" + data[2:]
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (zip directory unreadable)")
    buffer.seek(0)
    try:
        with torch.serialization.safe_globals([HParams]):
            content = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        raise CheckpointError(f"{path}: refused or unreadable checkpoint: {_first_line(e)}") from None
    return RawCheckpoint(path, content, tag, head, len(data))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    # torch's weights_only error is an essay; the useful line names the refused global.
    for line in text.splitlines():
        if "GLOBAL" in line or "global" in line.split(" ", 3)[:3]:
            return "it contains code or objects that are not weights (" + line.strip()[:250] + ")"
    return text.splitlines()[0][:300]


def require_keys(container: Any, keys: tuple[str, ...], path: str, what: str) -> None:
    """Check that a checkpoint's top-level dict has the keys a format requires."""
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path}: not a {what} checkpoint (top level is {type(container).__name__})")
    missing = [k for k in keys if k not in container]
    if missing:
        raise CheckpointError(f"{path}: not a {what} checkpoint (missing top-level keys {missing})")


def check_state_dict_keys(
    state: Mapping[str, Any], expected: set[str], path: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Strict key check with a message naming missing and unexpected names."""
    present = {k for k in state if not k.startswith(ignore_prefixes)}
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        def show(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {show(unexpected)}")
        raise CheckpointError(f"{path}: weights do not match the model ({'; '.join(parts)})")


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_g``/``X.weight_v`` pair by ``X.weight = g * v / ||v||``.

    The norm runs over every axis except the one ``g`` keeps (axis 0 as stored; for transposed
    convolutions that is the input-channel axis, which is exactly how the files store it).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):
            stem = name[: -len(".weight_v")]
            g = state.get(stem + ".weight_g")
            if g is None:
                raise CheckpointError(f"weight-norm pair incomplete: {stem}.weight_g missing")
            v = tensor.float()
            dims = tuple(range(1, v.dim()))
            out[stem + ".weight"] = g.float() * v / v.norm(dim=dims, keepdim=True)
            continue
        out[name] = tensor
    orphans = [n for n in state if n.endswith(".weight_g") and n[:-2] + "_v" not in state]
    if orphans:
        raise CheckpointError(f"weight-norm pair incomplete: {orphans[0][:-2]}_v missing")
    return out


def write_tagged(obj: Any, path: str | os.PathLike[str], tag: bytes | None) -> None:
    """``torch.save`` then, like upstream's newer writers, overwrite ``PK`` with a version tag."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    if tag is not None:
        if tag not in HEADER_TAGS:
            raise ValueError(f"unknown SoVITS header tag {tag!r}")
        data = tag + data[2:]
    with open(path, "wb") as f:
        f.write(data)
