"""Writing exported graphs: the .onnx file, its manifest, and the optional float16 version."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import BackendError
from .manifest import EXPORT_FORMAT, Manifest, TensorSpec, graph_path, manifest_path, sha256_of

ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 9: "bool", 6: "int32"}


def _specs(values) -> list[TensorSpec]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        specs.append(TensorSpec(v.name, ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), shape))
    return specs


def to_float16(model):
    """Weights and arithmetic in float16, graph inputs/outputs kept float32 (casts at the edges).

    Sampling, softmax-like reductions and normalisations that overflow in half precision stay in
    float32 by onnxconverter-common's default block list plus ours.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise BackendError(f"float16 export needs onnxconverter-common (pip install onnxconverter-common): {e}") from None
    block = list(float16.DEFAULT_OP_BLOCK_LIST)
    # Intermediate type annotations from the float32 trace would contradict the converted casts.
    del model.graph.value_info[:]
    return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)


def write_graph(onnx_bytes: bytes, out_dir: Path, stage: str, precision: str, source: Path, facts: dict,
                convert: bool = False) -> Path:
    """Save ``<stage>.<precision>.onnx`` and its manifest. ``convert``: the bytes are a float32 graph to
    be converted to ``precision`` here; otherwise they already are in ``precision`` (traced so)."""
    import onnx
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(onnx_bytes)
    if convert and precision == "float16":
        model = to_float16(model)
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
