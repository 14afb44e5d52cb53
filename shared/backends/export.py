"""Exporting graphs: a module traced to ONNX bytes, and the .onnx file with its manifest."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import BackendError
from .manifest import EXPORT_FORMAT, Manifest, TensorSpec, graph_path, manifest_path, sha256_of

ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 9: "bool", 6: "int32"}


OPSET = 17  # one opset for every stage's graph


def onnx_bytes(module, example: tuple, inputs: list[str], outputs: list[str], dynamic_axes: dict) -> bytes:
    """``module`` traced on ``example`` with the TorchScript exporter (the graphs' loops and shapes
    are written for it), as the bytes of an ONNX model."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        example,
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic_axes,
    )
    return buffer.getvalue()


def _specs(values) -> list[TensorSpec]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        specs.append(TensorSpec(v.name, ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), shape))
    return specs


def write_graph(onnx_bytes: bytes, out_dir: Path, stage: str, precision: str, source: Path, facts: dict) -> Path:
    """Save ``<stage>.<precision>.onnx`` and its manifest.

    float16 graphs are traced from a half-precision copy of the model (weights and activations in
    half, graph inputs such as the GPT cache too), not converted afterwards: onnxconverter-common's
    float16 pass produced type-inconsistent graphs for these models (Cast/Slice outputs).
    """
    import onnx
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(onnx_bytes)
    if precision not in ("float32", "float16"):
        raise BackendError(f"ONNX exports are float32 or float16, not {precision}")
    graph = graph_path(out_dir, stage, precision)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".onnx", delete=False) as tmp:
        onnx.save(model, tmp.name)
    Path(tmp.name).replace(graph)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    Manifest(
        stage=stage,
        precision=precision,
        source=str(source),
        source_sha256=sha256_of(Path(source)),
        onnx_sha256=sha256_of(graph),
        opset=opset,
        inputs=_specs(model.graph.input),
        outputs=_specs(model.graph.output),
        export_format=EXPORT_FORMAT,
        exporter=f"torch {torch.__version__} / onnx {onnx.__version__}",
        facts=facts,
    ).write(manifest_path(graph))
    return graph
