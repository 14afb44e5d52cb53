"""Backend choice from the environment, the fallback policy, provider errors and export manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dora_gpt_sovits.backends.config import BackendChoice, choice_from_env
from dora_gpt_sovits.backends.errors import BackendError, BackendUnavailable, ExportMissing, ExportStale
from dora_gpt_sovits.backends.manifest import Manifest, checked_graph, manifest_path
from dora_gpt_sovits.backends.ort import providers_for
from dora_gpt_sovits.backends.registry import open_stage


def test_defaults_are_torch_on_cpu_in_float32():
    assert choice_from_env({}) == BackendChoice("torch", "cpu", "float32", None, ())


def test_env_picks_backend_device_precision_and_ordered_fallbacks(tmp_path):
    choice = choice_from_env(
        {
            "GSV_BACKEND": "onnxruntime",
            "GSV_DEVICE": "cuda",
            "GSV_DTYPE": "float16",
            "GSV_ONNX_DIR": str(tmp_path),
            "GSV_BACKEND_FALLBACK": "onnxruntime@cpu, torch",
        }
    )
    assert (choice.backend, choice.device, choice.dtype, choice.onnx_dir) == (
        "onnxruntime",
        "cuda:0",
        "float16",
        tmp_path,
    )
    assert [a.label for a in choice.alternatives()] == [
        "onnxruntime@cuda:0/float16",
        "onnxruntime@cpu/float16",
        "torch@cuda:0/float16",
    ]


@pytest.mark.parametrize(
    "env, words",
    [
        ({"GSV_BACKEND": "tensorflow"}, "GSV_BACKEND='tensorflow'"),
        ({"GSV_DEVICE": "gpu"}, "GSV_DEVICE='gpu'"),
        ({"GSV_DTYPE": "int4"}, "GSV_DTYPE='int4'"),
        ({"GSV_BACKEND": "onnxruntime", "GSV_DTYPE": "bfloat16"}, "only supported by GSV_BACKEND=torch"),
        ({"GSV_BACKEND": "tensorrt"}, "needs GSV_DEVICE=cuda"),
        ({"GSV_BACKEND_FALLBACK": "torch@tpu"}, "GSV_BACKEND_FALLBACK entry 'torch@tpu'"),
    ],
)
def test_bad_values_name_the_variable(env, words):
    with pytest.raises(BackendError, match=words.replace("[", r"\[")):
        choice_from_env(env)


def missing(choice):
    raise BackendUnavailable("CUDAExecutionProvider is not available")


def test_unavailable_backend_stops_without_fallback_and_says_how_to_allow_one():
    with pytest.raises(
        BackendUnavailable, match="gpt: onnxruntime@cuda:0/float32: CUDAExecutionProvider.*GSV_BACKEND_FALLBACK"
    ):
        open_stage(
            "gpt",
            choice_from_env({"GSV_BACKEND": "onnxruntime", "GSV_DEVICE": "cuda"}),
            {"onnxruntime": missing, "torch": lambda c: "torch"},
        )


def test_explicit_fallback_is_used_in_order_and_reported():
    choice = choice_from_env(
        {"GSV_BACKEND": "onnxruntime", "GSV_DEVICE": "cuda", "GSV_BACKEND_FALLBACK": "onnxruntime@cpu,torch@cpu"}
    )
    built, used = open_stage(
        "gpt", choice, {"onnxruntime": lambda c: "ort" if c.device == "cpu" else missing(c), "torch": lambda c: "torch"}
    )
    assert (built, used.label) == ("ort", "onnxruntime@cpu/float32")


def test_a_broken_model_is_never_hidden_by_a_fallback():
    def broken(choice):
        raise ValueError("weights do not match")

    choice = choice_from_env({"GSV_BACKEND": "onnxruntime", "GSV_BACKEND_FALLBACK": "torch"})
    with pytest.raises(ValueError, match="weights do not match"):
        open_stage("gpt", choice, {"onnxruntime": broken, "torch": lambda c: "torch"})


def test_missing_gpu_providers_are_clear_errors_not_a_cpu_run():
    import onnxruntime

    available = onnxruntime.get_available_providers()
    for choice, provider in (
        (BackendChoice("onnxruntime", "cuda:0"), "CUDAExecutionProvider"),
        (BackendChoice("tensorrt", "cuda:0"), "TensorrtExecutionProvider"),
    ):
        if provider in available:
            continue  # a GPU build: checked by the GPU tests instead
        with pytest.raises(BackendUnavailable, match=f"{provider} is not available in onnxruntime"):
            providers_for(choice)
    assert providers_for(BackendChoice("onnxruntime", "cpu")) == ["CPUExecutionProvider"]


def write_fake_export(tmp_path: Path) -> tuple[Path, Path]:
    from onnx import TensorProto, helper

    from dora_gpt_sovits.backends.export import write_graph

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    source = tmp_path / "weights.ckpt"
    source.write_bytes(b"weights v1")
    graph = write_graph(model.SerializeToString(), tmp_path / "onnx", "vocoder", "float32", source, {"k": 1})
    return source, graph


def test_manifest_records_source_hash_shapes_and_precision(tmp_path):
    source, graph = write_fake_export(tmp_path)
    path, manifest = checked_graph(graph.parent, "vocoder", "float32", source)
    assert path == graph and manifest.precision == "float32" and manifest.opset == 17
    assert manifest.inputs[0].shape == ["n"] and manifest.facts == {"k": 1}
    assert len(manifest.source_sha256) == 64


def test_stale_or_mismatched_exports_are_refused(tmp_path):
    source, graph = write_fake_export(tmp_path)
    with pytest.raises(ExportMissing, match="no vocoder float16 graph"):
        checked_graph(graph.parent, "vocoder", "float16", source)
    with pytest.raises(ExportMissing, match="GSV_ONNX_DIR is not set"):
        checked_graph(None, "vocoder", "float32", source)
    source.write_bytes(b"weights v2")
    with pytest.raises(ExportStale, match="exported from other weights"):
        checked_graph(graph.parent, "vocoder", "float32", source)
    source.write_bytes(b"weights v1")
    meta = json.loads(manifest_path(graph).read_text())
    meta["export_format"] = 0
    manifest_path(graph).write_text(json.dumps(meta))
    with pytest.raises(ExportStale, match="export format 0"):
        checked_graph(graph.parent, "vocoder", "float32", source)
    meta["export_format"] = Manifest.read(manifest_path(graph)).__class__.__dataclass_fields__["export_format"].default
    meta["stage"] = "bert"
    manifest_path(graph).write_text(json.dumps(meta))
    with pytest.raises(ExportStale, match="holds bert/float32"):
        checked_graph(graph.parent, "vocoder", "float32", source)
    meta["stage"] = "vocoder"
    manifest_path(graph).write_text(json.dumps(meta))
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ExportStale, match="changed after export"):
        checked_graph(graph.parent, "vocoder", "float32", source)
    manifest_path(graph).unlink()
    with pytest.raises(ExportStale, match="has no manifest"):
        checked_graph(graph.parent, "vocoder", "float32", source)
