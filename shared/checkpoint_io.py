"""Reading official GPT-SoVITS checkpoint containers without executing pickled code.

Official files are ``torch.save`` zip archives. Two quirks matter:

* SoVITS writers may overwrite the first two bytes (``PK``) with a version tag (``00``..``06``);
  the archive is only readable once ``PK`` is put back.
* Fine-tuned SoVITS files pickle their config as upstream's ``utils.HParams`` object.

We never call the general unpickler. ``torch.load(weights_only=True)`` is PyTorch's restricted
unpickler (tensors, containers and primitives only); the one extra class admitted is our own
``HParams`` stand-in registered under upstream's name ``utils.HParams``, which only stores a
``__dict__``. Anything else in the pickle (``os.system``, ``eval``, arbitrary classes) is refused.

The restricted unpickler still admits content that hurts later, so :func:`read_checkpoint` checks
what it got before any loader sees it (:func:`check_content`), each refusal one line:

* the path must be a regular file of at most 2 GiB (the largest official file, s2Gv3.pth, is
  770 MB); a FIFO or device would block the read for ever;
* the zip entries may inflate to at most :data:`INFLATION_FACTOR` × the file + 256 MiB: ``torch.save``
  stores entries uncompressed, while a deflated entry can grow 1000-fold inside ``torch.load``;
* containers: string keys only (every official file has them; other keys crash name handling),
  no reference cycles, nesting at most :data:`MAX_DEPTH` deep, and at most :data:`MAX_OBJECTS`
  objects counted as a tree (a list holding the same list twice at each of 30 levels is 2^30
  objects to anything that walks it, though the pickle is tiny);
* tensors: dense (``torch.strided``), not nested or quantized, of a real dtype. A sparse tensor
  with an out-of-bounds index crashes the process (SIGSEGV) when made dense;
* the tensors' logical size (elements × element size, which is what ``.float()`` or ``.to()``
  materialises) at most :data:`INFLATION_FACTOR` × the file + 256 MiB: a 1-element storage viewed
  with stride 0 as a [10⁵, 10⁴] tensor is a few bytes on disk;
* no NaN/inf in floating tensors: such weights load silently and then decode token 0 for ever or
  produce NaN audio. The message names the first offending tensor.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

from .regular_file import open_regular_file

MAX_CHECKPOINT_BYTES = 2 << 30
# A file may make us hold at most 2 x its size + 256 MiB: twice allows tied weights counted twice;
# the slack admits small shape-only test files (stride-0 views, ~200 MiB) while the attacks seen
# (a 1 MB file inflating to 1.25 GB, 20 KB of stride-0 views claiming 5.7 GB) stay far outside.
INFLATION_FACTOR = 2
INFLATION_SLACK_BYTES = 256 << 20
MAX_DEPTH = 32  # official files nest 4 deep (config -> model -> list -> list)
MAX_OBJECTS = 200_000  # official files hold < 3,000 (tensors, config entries, strings)
# Layer counts above this are refused before any model is built (building is linear in layers,
# and a config may claim anything); official models have 6 (SoVITS) and 24 (GPT, HuBERT, BERT).
MAX_LAYERS = 128
WEIGHT_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.uint8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)


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
        with open_regular_file(path, MAX_CHECKPOINT_BYTES, "checkpoint", CheckpointError) as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
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
    check_inflation(buffer, len(data), path)
    buffer.seek(0)
    try:
        with torch.serialization.safe_globals([HParams]):
            content = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        raise CheckpointError(f"{path}: refused or unreadable checkpoint: {_first_line(e)}") from None
    check_content(content, path, len(data))
    return RawCheckpoint(path, content, tag, head, len(data))


def inflation_budget(file_bytes: int) -> int:
    """Bytes a file of ``file_bytes`` may expand to, in its zip entries or in its tensors."""
    return INFLATION_FACTOR * file_bytes + INFLATION_SLACK_BYTES


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_inflation(archive: BinaryIO, file_bytes: int, path: str) -> None:
    """Refuse archives whose entries would inflate beyond the budget, from the zip directory alone."""
    try:
        entries = zipfile.ZipFile(archive).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(e)})") from None
    inflated = sum(entry.file_size for entry in entries)
    if inflated > inflation_budget(file_bytes):
        raise CheckpointError(
            f"{path}: archive entries inflate to {mib(inflated)} from a {mib(file_bytes)} file "
            f"(at most {INFLATION_FACTOR}x + {mib(INFLATION_SLACK_BYTES)}); refusing a compressed bomb"
        )


def check_content(content: Any, path: str, file_bytes: int) -> None:
    """Everything :func:`read_checkpoint` promises about the unpickled object (module docstring)."""
    tensors = list(walk_content(content, path))
    for where, tensor in tensors:
        check_tensor_kind(tensor, where, path)
    check_tensor_budget(tensors, path, file_bytes)
    for where, tensor in tensors:
        check_finite(tensor, where, path)


def _children(obj: Any, where: str, path: str) -> list[tuple[str, Any]]:
    """``(where, child)`` pairs of a container, keys included; refuses non-string keys."""
    if isinstance(obj, HParams):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        for key in obj:
            if not isinstance(key, str):
                raise CheckpointError(
                    f"{path}: {where} has the key {key!r} ({type(key).__name__}); checkpoint keys must be strings"
                )
        return [(f"{where}[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)) and not isinstance(obj, torch.Size):
        return [(f"{where}[{i}]", value) for i, value in enumerate(obj)]
    return []


def walk_content(root: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Each distinct tensor once, with where it sits; refuses cycles, deep nesting and blow-ups.

    Iterative (a 10⁵-deep pickle must not exhaust Python's stack). The object count is the size of
    the content *as a tree* — what any recursive walk (``to_plain``, a deepcopy) would visit —
    computed once per distinct container, so exponential sharing is caught in linear time.
    """
    tree_size: dict[int, int] = {}  # id -> objects in its subtree, once finished
    on_path: set[int] = set()
    seen_tensors: set[int] = set()
    keep_alive = []  # ids stay unique only while the objects live (HParams vars, children lists)
    stack: list[tuple[Any, str, int, list | None]] = [(root, "checkpoint", 0, None)]
    while stack:
        obj, where, depth, children = stack.pop()
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen_tensors:
                seen_tensors.add(id(obj))
                yield where, obj
            tree_size[id(obj)] = 1
            continue
        if children is None:  # first visit
            if id(obj) in tree_size:
                continue
            if id(obj) in on_path:
                raise CheckpointError(f"{path}: {where} contains itself (a reference cycle); not a checkpoint")
            if depth > MAX_DEPTH:
                raise CheckpointError(f"{path}: content nests deeper than {MAX_DEPTH} levels (at {where[:200]})")
            children = _children(obj, where, path)
            keep_alive.append(children)
            if not children:
                tree_size[id(obj)] = 1
                continue
            on_path.add(id(obj))
            stack.append((obj, where, depth, children))
            stack.extend((child, child_where, depth + 1, None) for child_where, child in reversed(children))
            continue
        on_path.discard(id(obj))  # all children are finished
        size = 1 + sum(tree_size.get(id(child), 1) for _, child in children)
        if size > MAX_OBJECTS:
            raise CheckpointError(
                f"{path}: content expands to more than {MAX_OBJECTS} objects (at {where[:200]}: "
                f"containers shared over and over); not a checkpoint"
            )
        tree_size[id(obj)] = size


def check_tensor_kind(tensor: torch.Tensor, where: str, path: str) -> None:
    """Dense, plain, CPU, of a weight dtype: anything else is refused before it is touched."""
    if tensor.layout != torch.strided or tensor.is_nested:
        kind = "nested" if tensor.is_nested else str(tensor.layout).replace("torch.", "")
        raise CheckpointError(f"{path}: {where} is a {kind} tensor; only dense tensors are accepted")
    if tensor.is_quantized or tensor.dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"{path}: {where} has dtype {tensor.dtype}, which is not a weight type")
    if tensor.device.type != "cpu":
        raise CheckpointError(f"{path}: {where} is on device {tensor.device}, expected cpu")


def logical_bytes(tensor: torch.Tensor) -> int:
    """Bytes the tensor takes once materialised (stride-0 and overlapping views count in full)."""
    return tensor.numel() * tensor.element_size()


def check_tensor_budget(tensors: list[tuple[str, torch.Tensor]], path: str, file_bytes: int) -> None:
    total = sum(logical_bytes(t) for _, t in tensors)
    if total > inflation_budget(file_bytes):
        where, largest = max(tensors, key=lambda item: logical_bytes(item[1]))
        raise CheckpointError(
            f"{path}: tensors would take {mib(total)} in memory from a {mib(file_bytes)} file (at most "
            f"{INFLATION_FACTOR}x + {mib(INFLATION_SLACK_BYTES)}; largest {where} {list(largest.shape)} stride {list(largest.stride())})"
        )


def check_finite(tensor: torch.Tensor, where: str, path: str) -> None:
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(
            f"{path}: {where} holds {bad} NaN/inf values of {tensor.numel()}; the weights are corrupt"
        )


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
            if v.dim() < 2 or g.numel() != v.shape[0]:
                raise CheckpointError(
                    f"weight-norm pair of {stem} does not fit: weight_g {list(g.shape)}, weight_v {list(v.shape)}"
                )
            dims = tuple(range(1, v.dim()))
            norm = v.norm(dim=dims, keepdim=True)
            if not bool((norm > 0).all()):  # g * v / 0 would be NaN weights
                raise CheckpointError(f"weight-norm direction {stem}.weight_v has an all-zero row")
            out[stem + ".weight"] = g.float().reshape(norm.shape) * v / norm
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
