"""TensorRT: every dynamic input of every exported graph has an explicit profile, the profiles
contain the shapes the export was traced with, and building engines without TensorRT is a clear
error. Engine building itself needs an NVIDIA GPU: skipped elsewhere with the reason."""

from __future__ import annotations

import pytest

from dora_gpt_sovits.backends.errors import BackendUnavailable
from dora_gpt_sovits.backends.manifest import Manifest, manifest_path
from dora_gpt_sovits.backends.tensorrt import build_engines, profiles

pytestmark = pytest.mark.slow  # builds and exports models once per module (seconds)


@pytest.fixture(scope="module")
def onnx_dir(exported_tiny_bundle):
    return exported_tiny_bundle / "onnx"


def test_every_dynamic_input_has_an_ordered_profile(onnx_dir):
    graphs = sorted(onnx_dir.glob("*.float32.onnx"))
    assert {g.name.split(".")[0] for g in graphs} == {
        "gpt_prefill",
        "gpt_step",
        "sovits_condition",
        "sovits_content",
        "sovits_window",
        "bert",
        "hubert",
    }
    for graph in graphs:
        manifest = Manifest.read(manifest_path(graph))
        low, opt, high = profiles(manifest.stage, manifest.facts)
        for spec in manifest.inputs:
            if all(isinstance(d, int) for d in spec.shape):
                continue
            assert spec.name in low, (manifest.stage, spec.name)
            for a, b, c, declared in zip(low[spec.name], opt[spec.name], high[spec.name], spec.shape):
                assert a <= b <= c, (manifest.stage, spec.name)
                if isinstance(declared, int):
                    assert a == c == declared, (manifest.stage, spec.name, declared)


def test_building_engines_without_tensorrt_says_why(onnx_dir):
    import onnxruntime

    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT: test_engines_build_on_a_gpu covers it")
    with pytest.raises(BackendUnavailable, match="TensorrtExecutionProvider is not available"):
        build_engines(onnx_dir, "float32")


@pytest.mark.gpu
def test_engines_build_on_a_gpu(onnx_dir):
    import onnxruntime
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch.cuda.is_available() is False here)")
    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with the TensorRT execution provider")
    assert len(build_engines(onnx_dir, "float32")) == 7
    assert any((onnx_dir / "tensorrt").iterdir())
