"""ONNX Runtime sessions on an explicit execution provider: a missing provider or GPU is an error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import BackendChoice
from .errors import BackendUnavailable

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(f"onnxruntime is not installed ({e})") from None
    return onnxruntime


def providers_for(choice: BackendChoice, trt_options: dict[str, Any] | None = None) -> list[Any]:
    """The provider list for ``choice``; raises if the provider is not in this onnxruntime build.

    Only the requested provider is listed (plus CPU for the few ops GPU providers leave to it):
    ONNX Runtime would otherwise quietly run the whole graph on the CPU.
    """
    ort = import_ort()
    available = ort.get_available_providers()
    if choice.backend == "tensorrt":
        wanted = PROVIDERS["tensorrt"]
    else:
        wanted = PROVIDERS["cuda" if choice.is_cuda else "cpu"]
    if wanted not in available:
        hint = {
            "CUDAExecutionProvider": "install onnxruntime-gpu (and a CUDA runtime) on a machine with an NVIDIA GPU",
            "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT libraries on a machine with an NVIDIA GPU",
        }.get(wanted, "")
        raise BackendUnavailable(
            f"{wanted} is not available in onnxruntime {ort.__version__} (has: {', '.join(available)}){'; ' + hint if hint else ''}"
        )
    if choice.backend == "tensorrt":
        options = {"device_id": choice.device_index, **(trt_options or {})}
        cuda = ("CUDAExecutionProvider", {"device_id": choice.device_index})
        return [(wanted, options), cuda, "CPUExecutionProvider"]
    if choice.is_cuda:
        return [(wanted, {"device_id": choice.device_index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(
    graph: Path, choice: BackendChoice, threads: int | None = None, trt_options: dict[str, Any] | None = None
):
    ort = import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    n = threads if threads is not None else int(os.environ.get("GSV_THREADS", "0") or 0)
    if n > 0:
        options.intra_op_num_threads = n
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE for torch in our graphs):
    # the nodes share the cores, and a spinning pool steals them from the other stages.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(graph), options, providers=providers_for(choice, trt_options))
    if choice.is_cuda and session.get_providers()[0] == "CPUExecutionProvider":
        raise BackendUnavailable(
            f"{graph.name}: onnxruntime could not start {providers_for(choice)[0]} (no usable GPU?)"
        )
    return session
