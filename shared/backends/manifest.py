"""The manifest written next to every exported graph, and the check that refuses a stale one.

``<stage>.<precision>.onnx`` + ``<stage>.<precision>.json``. The manifest records what the graph was
made from (the source checkpoint's sha256), what it is (stage, precision, opset, inputs/outputs
with their dynamic axes, stage-specific facts such as the GPT's layer count) and by which exporter
format. Loading compares all of that with what the node was asked to serve.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExportMissing, ExportStale

# Bumped whenever a graph's inputs, outputs or semantics change: older exports are refused.
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: list[int | str]  # str = a named dynamic axis


@dataclass(frozen=True)
class Manifest:
    stage: str
    precision: str
    source: str  # the checkpoint file or folder exported
    source_sha256: str
    onnx_sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    export_format: int = EXPORT_FORMAT
    exporter: str = ""  # e.g. "torch 2.13.0 / onnx 1.23"
    facts: dict[str, Any] = field(default_factory=dict)  # stage-specific (config values, profiles)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        raw = json.loads(path.read_text())
        raw["inputs"] = [TensorSpec(**t) for t in raw["inputs"]]
        raw["outputs"] = [TensorSpec(**t) for t in raw["outputs"]]
        return cls(**raw)


def graph_path(onnx_dir: Path, stage: str, precision: str) -> Path:
    return Path(onnx_dir) / f"{stage}.{precision}.onnx"


def manifest_path(graph: Path) -> Path:
    return graph.with_suffix(".json")


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted) for HF model folders."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def checked_graph(onnx_dir: Path | None, stage: str, precision: str, source: Path | None) -> tuple[Path, Manifest]:
    """The graph for ``stage``/``precision`` in ``onnx_dir``, after checking its manifest against the
    source checkpoint the node would otherwise load (``None``: only the graph's own integrity)."""
    if onnx_dir is None:
        raise ExportMissing(
            "GSV_ONNX_DIR is not set; export the graphs first (python scripts/export_onnx.py --out DIR)"
        )
    graph = graph_path(onnx_dir, stage, precision)
    meta = manifest_path(graph)
    if not graph.is_file():
        raise ExportMissing(
            f"no {stage} {precision} graph at {graph}; run python scripts/export_onnx.py --out {onnx_dir} --precision {precision}"
        )
    if not meta.is_file():
        raise ExportStale(f"{graph} has no manifest {meta.name}; export it again with scripts/export_onnx.py")
    try:
        manifest = Manifest.read(meta)
    except (ValueError, TypeError, KeyError) as e:
        raise ExportStale(f"{meta}: unreadable manifest ({e}); export again") from None
    problems = []
    if manifest.export_format != EXPORT_FORMAT:
        problems.append(f"export format {manifest.export_format}, this code reads {EXPORT_FORMAT}")
    if manifest.stage != stage or manifest.precision != precision:
        problems.append(f"it holds {manifest.stage}/{manifest.precision}, not {stage}/{precision}")
    if source is not None and Path(source).exists() and manifest.source_sha256 != sha256_of(Path(source)):
        problems.append(f"it was exported from other weights than {source} (sha256 differs)")
    if not problems and manifest.onnx_sha256 != sha256_of(graph):
        problems.append("the .onnx file changed after export (sha256 differs from the manifest)")
    if problems:
        raise ExportStale(f"{graph} is stale: " + "; ".join(problems) + "; export it again with scripts/export_onnx.py")
    return graph, manifest
