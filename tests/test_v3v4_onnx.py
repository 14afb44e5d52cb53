"""The exported v3/v4 graphs (DiT text/step/velocity, mel vocoder) against torch on the tiny
upstream fixtures, through the very code the node runs (``cfm.sample_mel``, ``mel_synthesis``).

Tolerances: float32 ONNX Runtime sums in other orders than PyTorch (~1e-6 apart per graph); a DiT
step is held to 1e-4 and a whole synthesis (4 Euler steps feed each other, then the vocoder) to
1e-3 on the waveform, while any real fault (a frame off, a wrong time code) moves values by > 1e-2.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import pytest
import torch
from test_upstream_v3v4 import BASE, SEEDS, VOCODER, expected, model, version, voice  # noqa: F401 (fixtures)

from dora_gpt_sovits.backends.config import BackendChoice
from dora_gpt_sovits.backends.errors import BackendUnavailable, ExportStale
from dora_gpt_sovits.backends.export import write_graph
from dora_gpt_sovits.backends.export_cli import DTYPES
from dora_gpt_sovits.backends.manifest import Manifest, graph_path, manifest_path, sha256_of
from dora_gpt_sovits.backends.mel_graph import DIT_STAGES, MEL_STAGES, VOCODER_STAGE, export_dit, export_mel_vocoder
from dora_gpt_sovits.backends.mel_runtime import open_graph_dit, open_graph_vocoder
from dora_gpt_sovits.sovits import mel_synthesis as ms
from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine
from dora_gpt_sovits.sovits.mel_vocoders import load_mel_vocoder

pytestmark = [pytest.mark.usefixtures("torch_single_thread"), pytest.mark.slow]
STEP_ATOL, WAV_ATOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def onnx_dir(version, model, tmp_path_factory):
    """The fixture's DiT and vocoder graphs in both precisions, written as ``gsv-export-onnx`` writes them."""
    out = tmp_path_factory.mktemp(f"onnx-{version}")
    vocoder = load_mel_vocoder(version, VOCODER[version])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer notes
        for precision, dtype in DTYPES.items():
            for name, (data, facts) in export_dit(model.estimator, dtype).items():
                write_graph(data, out, name, precision, BASE[version], {**facts, "lora_base_sha256": None})
            for name, (data, facts) in export_mel_vocoder(vocoder, version, dtype).items():
                write_graph(data, out, name, precision, VOCODER[version], facts)
    return out


def cpu(onnx_dir, dtype: str = "float32") -> BackendChoice:
    return BackendChoice("onnxruntime", "cpu", dtype, onnx_dir)


def test_manifests_say_what_each_graph_is(version, onnx_dir):
    for stage in MEL_STAGES:
        manifest = Manifest.read(manifest_path(graph_path(onnx_dir, stage, "float32")))
        source = VOCODER[version] if stage == VOCODER_STAGE else BASE[version]
        assert (manifest.stage, manifest.precision, manifest.source_sha256) == (stage, "float32", sha256_of(source))
        assert 0 <= manifest.facts["max_abs_error"] <= STEP_ATOL  # measured at export against torch
    velocity = Manifest.read(manifest_path(graph_path(onnx_dir, "mel_dit_velocity", "float32")))
    shapes = {s.name: (s.dtype, s.shape) for s in velocity.inputs}
    assert list(shapes) == ["x", "cond", "text", "t", "step"]
    assert all(dtype == "float32" and shape[0] == "batch" for dtype, shape in shapes.values())
    assert all(shapes[name][1][1] == "frames" for name in ("x", "cond", "text"))
    vocoder = Manifest.read(manifest_path(graph_path(onnx_dir, VOCODER_STAGE, "float32")))
    assert vocoder.facts["model_version"] == version and vocoder.outputs[0].shape == ["batch", 1, "samples"]


def test_dit_step_matches_torch(model, onnx_dir):
    dit, graph = model.estimator, open_graph_dit(cpu(onnx_dir), BASE[model.config.model_version], threads=1)
    c = dit.config
    assert graph.config == c and next(graph.parameters()).dtype == torch.float32
    g = torch.Generator().manual_seed(5)
    n = 137  # not the traced length: the time axis is dynamic
    features, x, cond = (torch.randn(1, n, d, generator=g) for d in (c.text_dim, c.mel_dim, c.mel_dim))
    dt, t = torch.tensor([0.25]), torch.tensor([0.5])
    with torch.inference_mode():
        text, step = dit.embed_text(features), dit.embed_step(dt)
        assert (graph.embed_text(features) - text).abs().max() <= STEP_ATOL
        assert (graph.embed_step(dt) - step).abs().max() <= STEP_ATOL
        want = dit.velocity(x, cond, text, t, step)
        assert (graph.velocity(x, cond, text, t, step) - want).abs().max() <= STEP_ATOL


def test_synthesis_on_onnxruntime_matches_torch(version, model, onnx_dir, expected):  # noqa: F811
    engine = MelVocoderEngine.open(BASE[version], VOCODER[version], version, cpu(onnx_dir), threads=1)
    torch_vocoder = load_mel_vocoder(version, VOCODER[version])

    def synthesize(m, vocoder):
        return ms.synthesize(
            m,
            vocoder,
            voice(m, version, expected),
            expected["target_codes"],
            expected["target_phones"].view(1, -1),
            4,
            noise=ms.upstream_noise(torch.Generator().manual_seed(SEEDS["s4"])),
        )

    want, got = synthesize(model, torch_vocoder), synthesize(engine.model, engine.vocoder)
    assert got.shape == want.shape and (got - want).abs().max() <= WAV_ATOL, float((got - want).abs().max())
    assert engine.sample_rate == engine.vocoder.sample_rate


def test_float16_graphs_drive_the_same_synthesis(version, model, onnx_dir, expected):  # noqa: F811
    """The float16 set: the DiT in half (sample_mel reads it from parameters()), the vocoder in half
    for v4 and float32 for v3 (its manifest says so); the waveform stays near torch float32."""
    engine = MelVocoderEngine.open(BASE[version], VOCODER[version], version, cpu(onnx_dir, "float16"), threads=1)
    assert next(engine.model.estimator.parameters()).dtype == torch.float16
    assert next(engine.vocoder.parameters()).dtype == (torch.float32 if version == "v3" else torch.float16)
    for stage in MEL_STAGES:
        facts = Manifest.read(manifest_path(graph_path(onnx_dir, stage, "float16"))).facts
        assert facts["max_abs_error"] < 5e-2, (stage, facts["max_abs_error"])

    def synthesize(m, vocoder):
        noise = ms.upstream_noise(torch.Generator().manual_seed(SEEDS["s4"]))
        args = (expected["target_codes"], expected["target_phones"].view(1, -1), 4)
        return ms.synthesize(m, vocoder, voice(m, version, expected), *args, noise=noise)

    want = synthesize(model, load_mel_vocoder(version, VOCODER[version]))
    got = synthesize(engine.model, engine.vocoder)
    snr = 10 * torch.log10((want**2).sum() / ((want - got) ** 2).sum())
    assert got.shape == want.shape and bool(torch.isfinite(got).all()) and snr > 20, float(snr)


def test_a_stale_or_corrupt_manifest_is_refused_in_one_line(version, onnx_dir, tmp_path):
    bad = tmp_path / "onnx"
    shutil.copytree(onnx_dir, bad)
    meta = manifest_path(graph_path(bad, "mel_dit_velocity", "float32"))
    raw = json.loads(meta.read_text())
    meta.write_text(json.dumps({**raw, "source_sha256": "0" * 64}))
    with pytest.raises(ExportStale) as e:
        open_graph_dit(cpu(bad), BASE[version])
    assert "other weights" in str(e.value) and "\n" not in str(e.value)
    meta.write_text("{not json")
    with pytest.raises(ExportStale, match="unreadable manifest"):
        open_graph_dit(cpu(bad), BASE[version])
    other = "v4" if version == "v3" else "v3"  # the vocoder graph asked for as the other version's
    with pytest.raises(ExportStale, match=f"holds the {version} vocoder, not {other}"):
        open_graph_vocoder(cpu(bad), None, other)


def test_a_lora_graph_is_refused_for_another_base(version, onnx_dir, tmp_path):
    bad = tmp_path / "onnx"
    shutil.copytree(onnx_dir, bad)
    for stage in DIT_STAGES:
        meta = manifest_path(graph_path(bad, stage, "float32"))
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "facts": {"lora_base_sha256": "0" * 64}}))
    with pytest.raises(ExportStale, match="another LoRA base"):
        open_graph_dit(cpu(bad), BASE[version], lora_base=BASE[version])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_gpu_backends_match_torch(version, model, onnx_dir, backend):
    """CUDA and TensorRT (engines built from the graphs with mel_graph.profiles) against torch."""
    import onnxruntime

    from dora_gpt_sovits.backends.stages import trt_options

    provider = {"onnxruntime": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[backend]
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch.cuda.is_available() is False here)")
    if provider not in onnxruntime.get_available_providers():
        pytest.skip(f"needs onnxruntime-gpu with {provider} (this build has {onnxruntime.get_available_providers()})")
    choice = dataclasses.replace(cpu(onnx_dir), backend=backend, device="cuda:0")
    options = trt_options(choice, DIT_STAGES, BASE[version])
    graph = open_graph_dit(choice, BASE[version], trt_options=options)
    dit = model.estimator
    c = dit.config
    g = torch.Generator().manual_seed(5)
    features, x, cond = (torch.randn(1, 200, d, generator=g) for d in (c.text_dim, c.mel_dim, c.mel_dim))
    with torch.inference_mode():
        text, step = dit.embed_text(features), dit.embed_step(torch.tensor([0.25]))
        want = dit.velocity(x, cond, text, torch.tensor([0.5]), step)
        got = graph.velocity(*(t.cuda() for t in (x, cond, text, torch.tensor([0.5]), step)))
    assert (got.cpu() - want).abs().max() <= 1e-3


def test_cuda_provider_missing_is_an_error(onnx_dir, version):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available():
        pytest.skip("a CUDA machine: test_gpu_backends_match_torch covers it")
    with pytest.raises(BackendUnavailable):
        open_graph_dit(dataclasses.replace(cpu(onnx_dir), device="cuda:0"), BASE[version])


def test_tensorrt_profiles_come_from_the_manifests(version, onnx_dir):
    """The TensorRT provider options (profiles, cache, precision) a GPU node would use, built here."""
    from dora_gpt_sovits.backends.stages import trt_options

    choice = dataclasses.replace(cpu(onnx_dir), backend="tensorrt", device="cuda:0")
    options = trt_options(choice, DIT_STAGES, BASE[version])
    assert options["mel_dit_velocity"]["trt_profile_max_shapes"].startswith("x:1x1536x100,cond:1x1536x100")
    assert trt_options(choice, (VOCODER_STAGE,), VOCODER[version])[VOCODER_STAGE]["trt_profile_opt_shapes"] == (
        "mel:1x100x200"
    )


def test_a_missing_export_falls_back_to_torch_as_configured(version, tmp_path):
    from types import SimpleNamespace

    from dora_gpt_sovits.backends.registry import open_stage
    from dora_gpt_sovits.backends.stages import mel_vocoder_builders

    paths = SimpleNamespace(sovits=BASE[version], vocoder=VOCODER[version], version=version, sovits_base=None)
    settings = SimpleNamespace(sample_steps=4, speed=1.0)
    choice = dataclasses.replace(cpu(tmp_path), fallback=(BackendChoice("torch", "cpu", "float32"),))
    engine, used = open_stage("vocoder", choice, mel_vocoder_builders(paths, settings))
    assert used.backend == "torch" and isinstance(engine.model.estimator, torch.nn.Module)
    with pytest.raises(BackendUnavailable, match="no mel_dit_text float32 graph"):
        open_stage("vocoder", cpu(tmp_path), mel_vocoder_builders(paths, settings))
