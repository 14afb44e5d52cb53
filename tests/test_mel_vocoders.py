"""The v3/v4 mel vocoders (BigVGAN v2, the v4 HiFi-GAN) and their loaders.

Without upstream: the resampling filter against upstream's numbers, the polyphase anti-aliased
activation against a direct evaluation of its definition, weight-norm folding, config validation,
missing files, hostile pickles, ONNX export. With the recorded fixtures
(tests/fixtures/upstream-v3v4/, scripts/record_upstream_v3v4.py): each vocoder's waveform on the
recorded mel against upstream's, ``ATOL`` 1e-4 (measured ~3e-7 on random tiny models, ~2e-6 on the
full-size BigVGAN: float summation order; 3.1e-6 / 1.4e-6 on the recorded tiny v3 / v4).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dora_gpt_sovits.checkpoint_io import CheckpointError
from dora_gpt_sovits.sovits.bigvgan import (
    AntiAliasedSnake,
    BigVGAN,
    BigVGANConfig,
    default_resample_filter,
    kaiser_sinc_lowpass,
)
from dora_gpt_sovits.sovits.generator import Generator
from dora_gpt_sovits.sovits.mel_vocoders import V4_VOCODER, load_mel_vocoder

pytestmark = pytest.mark.usefixtures("torch_single_thread")
UPSTREAM = Path(__file__).parent / "fixtures" / "upstream-v3v4"  # in the repository
ATOL = 1e-4

# upstream's kaiser_sinc_filter1d(0.25, 0.3, 12), printed with repr()
UPSTREAM_FILTER = [
    0.0020289646927267313, 0.009389465674757957, -0.0255434587597847, -0.057657383382320404,
    0.12857258319854736, 0.44320979714393616, 0.44320979714393616, 0.12857258319854736,
    -0.057657383382320404, -0.0255434587597847, 0.009389465674757957, 0.0020289646927267313,
]  # fmt: skip

TINY = {
    "resblock": "1",
    "num_mels": 100,
    "upsample_rates": [4, 2, 2],
    "upsample_kernel_sizes": [8, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3], [1, 2]],
    "activation": "snakebeta",
    "snake_logscale": True,
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "sampling_rate": 24000,
}


def randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if name.endswith(("alpha", "beta")) else 0.5 / max(1, p[0].numel()) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def tiny_bigvgan(config: dict = TINY, seed: int = 0) -> BigVGAN:
    return randomise(BigVGAN(BigVGANConfig.from_dict(config, "test")), seed)


def write_bigvgan(folder: Path, model: BigVGAN, state: dict | None = None, config: dict | None = None) -> Path:
    """``model`` in BigVGAN's file layout (names as upstream's module has them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or model.config.to_dict()))
    renames = {".alpha": ".act.alpha", ".beta": ".act.beta", ".up_filter": ".upsample.filter"}
    renames[".down_filter"] = ".downsample.lowpass.filter"
    out = {}
    for name, tensor in (state or model.state_dict()).items():
        if name.startswith("ups."):
            head, index, rest = name.split(".", 2)
            name = f"{head}.{index}.0.{rest}"
        for ours, theirs in renames.items():
            if name.endswith(ours):
                name, tensor = name[: -len(ours)] + theirs, tensor.view(1, 1, -1) if "filter" in ours else tensor
        out[name] = tensor
    torch.save({"generator": out}, folder / "bigvgan_generator.pt")
    return folder


def mel(frames: int, seed: int = 1, bins: int = 100) -> torch.Tensor:
    return torch.randn(1, bins, frames, generator=torch.Generator().manual_seed(seed)) * 2 - 5


# ---- the anti-aliased activation ---------------------------------------------------------------


def test_resampling_filter_is_upstreams():
    h = default_resample_filter()
    assert torch.equal(h, torch.tensor(UPSTREAM_FILTER)) and torch.equal(h, kaiser_sinc_lowpass(0.25, 0.3, 12))
    assert abs(float(h.sum()) - 1) < 1e-6 and torch.equal(h, h.flip(0))


def direct_activation(act: AntiAliasedSnake, x: torch.Tensor) -> torch.Tensor:
    """The definition, evaluated as written: replicate-pad, zero-stuff and low-pass (x2 gain), snake,
    replicate-pad, low-pass, keep every other sample. x: [B, C, T]."""
    channels, taps = x.shape[1], act.up_filter.numel()
    up = act.up_filter.view(1, 1, -1).expand(channels, 1, taps)
    down = act.down_filter.view(1, 1, -1).expand(channels, 1, taps)
    pad = taps // 2 - 1
    y = F.conv_transpose1d(F.pad(x, (pad, pad), mode="replicate"), up, stride=2, groups=channels) * 2
    crop = pad * 2 + (taps - 2) // 2
    y = y[..., crop : y.shape[-1] - crop]
    a, inv_b = (c.view(1, -1, 1) for c in act.snake_coefficients())
    z = y + inv_b * torch.sin(a * y) ** 2
    return F.conv1d(F.pad(z, (pad, pad + 1), mode="replicate"), down, stride=2, groups=channels)


@pytest.mark.parametrize("length", [1, 2, 5, 37, 400])
def test_polyphase_activation_equals_its_definition(length):
    act = randomise(AntiAliasedSnake(8, log_scale=True), 3)
    x = torch.randn(2, 8, length, generator=torch.Generator().manual_seed(length)) * 3
    with torch.no_grad():
        got = act(x.unsqueeze(2).contiguous(memory_format=torch.channels_last)).squeeze(2)
        want = direct_activation(act, x)
    assert got.shape == want.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---- BigVGAN: config and files -----------------------------------------------------------------


def test_output_length_range_and_batch():
    model = tiny_bigvgan()
    batch = torch.cat([mel(9, seed=1), mel(9, seed=2)])
    with torch.no_grad():
        wav = model(batch)
        rows = [model(row[None]) for row in batch]
    assert wav.shape == (2, 1, 9 * 16) and float(wav.abs().max()) <= 1.0
    torch.testing.assert_close(wav, torch.cat(rows), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"upsample_rates": [4, 2]}, "upsample_kernel_sizes"),
        ({"upsample_rates": [4, 2.0, 2]}, "upsample_rates"),
        ({"num_mels": True}, "num_mels"),
        ({"num_mels": 0}, "num_mels"),
        ({"upsample_initial_channel": 36}, "upsample_initial_channel"),
        ({"resblock_kernel_sizes": [3, 4]}, "resblock_kernel_sizes"),
        ({"resblock_dilation_sizes": [[1, 3]]}, "resblock_dilation_sizes"),
        ({"activation": "relu"}, "activation"),
        ({"resblock": 1}, "resblock"),
        ({"snake_logscale": "yes"}, "snake_logscale"),
        ({"upsample_kernel_sizes": [2, 4, 4]}, "upsample_kernel_sizes"),
        ({"num_mels": None}, "num_mels"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path, change, field):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **change}))
    with pytest.raises(ValueError) as e:
        BigVGANConfig.from_json(path)
    assert str(path) in str(e.value) and repr(field) in str(e.value) and "\n" not in str(e.value)


def test_config_missing_field_and_bad_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in TINY.items() if k != "snake_logscale"}))
    with pytest.raises(ValueError, match="lacks the field 'snake_logscale'"):
        BigVGANConfig.from_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BigVGANConfig.from_json(path)


def test_config_defaults_and_round_trip():
    config = BigVGANConfig.from_dict({k: v for k, v in TINY.items() if not k.startswith("use_")}, "test")
    assert config.use_tanh_at_final and config.use_bias_at_final and config.hop_length == 16
    assert BigVGANConfig.from_dict(config.to_dict(), "again") == config


def test_missing_folder_config_or_weights(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_mel_vocoder("v3", tmp_path / "nowhere")
    folder = write_bigvgan(tmp_path / "bv", tiny_bigvgan())
    os.remove(folder / "bigvgan_generator.pt")
    with pytest.raises(CheckpointError, match=r"bigvgan_generator\.pt: missing from the BigVGAN folder"):
        load_mel_vocoder("v3", folder)
    folder = write_bigvgan(tmp_path / "bv2", tiny_bigvgan())
    os.remove(folder / "config.json")
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_mel_vocoder("v3", folder)
    with pytest.raises(ValueError, match="no mel vocoder"):
        load_mel_vocoder("v2", folder)


def test_weights_not_matching_the_config_are_refused(tmp_path):
    small = tiny_bigvgan()
    folder = write_bigvgan(tmp_path / "bv", small, config={**TINY, "upsample_initial_channel": 64})
    with pytest.raises(CheckpointError, match="conv_pre.weight has shape"):
        load_mel_vocoder("v3", folder)
    state = {k: v for k, v in small.state_dict().items() if k != "conv_post.weight"}
    with pytest.raises(CheckpointError, match="missing 1: conv_post.weight"):
        load_mel_vocoder("v3", write_bigvgan(tmp_path / "bv2", small, state))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_hostile_pickle_is_refused(tmp_path):
    folder = write_bigvgan(tmp_path / "bv", tiny_bigvgan())
    torch.save({"generator": Payload()}, folder / "bigvgan_generator.pt")
    with pytest.raises(CheckpointError, match="not weights"):
        load_mel_vocoder("v3", folder)
    path = tmp_path / "vocoder.pth"
    with open(path, "wb") as f:
        pickle.dump(Payload(), f)  # not even a zip archive
    with pytest.raises(CheckpointError, match=str(path)):
        load_mel_vocoder("v4", path)


def with_weight_norm(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with every convolution split as upstream's files store it, the direction
    rows scaled by random positive factors (same weight, so folding on the wrong axis would show)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(".weight") and tensor.dim() == 3:
            stem = name[: -len(".weight")]
            norm = tensor.norm(dim=(1, 2), keepdim=True)
            out[stem + ".weight_g"] = norm
            out[stem + ".weight_v"] = tensor / norm * (torch.rand(norm.shape, generator=g) * 3 + 0.5)
        else:
            out[name] = tensor
    return out


def test_weight_norm_is_folded_at_load(tmp_path):
    model = tiny_bigvgan(seed=4)
    loaded = load_mel_vocoder("v3", write_bigvgan(tmp_path / "bv", model, with_weight_norm(model, 5)))
    assert "conv_pre.weight_g" not in loaded.state_dict() and loaded.sample_rate == 24000
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel(12)), model(mel(12)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", [{"activation": "snake", "snake_logscale": False}, {"resblock": "2"}])
def test_other_variants_load(tmp_path, variant):
    config = {**TINY, **variant, "use_tanh_at_final": True, "use_bias_at_final": True}
    model = tiny_bigvgan(config, seed=6)
    state = model.state_dict()
    if variant.get("activation") == "snake":  # one parameter, used as both frequency and magnitude
        state = {k: v for k, v in state.items() if not k.endswith(".beta")}
        with torch.no_grad():
            for act in (m for m in model.modules() if isinstance(m, AntiAliasedSnake)):
                act.beta.copy_(act.alpha)
    if variant.get("resblock") == "2":
        state = {k.replace(".convs1.", ".convs."): v for k, v in state.items()}
    loaded = load_mel_vocoder("v3", write_bigvgan(tmp_path / "bv", model, state, config))
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel(8)), model(mel(8)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("which", ["v3", "v4"])
def test_fft_convolutions_match_direct(which):
    model = tiny_bigvgan(seed=9) if which == "v3" else tiny_v4(seed=9)
    plans = {(16, 5): (16, 0), (8, 5): (16, 0)} if which == "v3" else {(32, 7): (16, 0), (16, 11): (32, 0)}
    x = mel(30, seed=4)
    with torch.no_grad():
        want = model(x)
        assert model.use_spectral_convs(True, plans) == (8 if which == "v3" else 12)
        got = model(x)
        model.use_spectral_convs(False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---- the v4 vocoder ----------------------------------------------------------------------------


def tiny_v4(width: int = 64, seed: int = 0) -> Generator:
    return randomise(Generator(**{**V4_VOCODER, "upsample_initial_channel": width}), seed)


def test_v4_loads_plain_weights_and_refuses_others(tmp_path):
    model = tiny_v4()
    assert model.cond is None and model.conv_post.bias is not None
    path = tmp_path / "vocoder.pth"
    torch.save(model.state_dict(), path)
    loaded = load_mel_vocoder("v4", path)
    assert (loaded.sample_rate, loaded.hop_length) == (48000, 480)
    with torch.no_grad():
        got = loaded(mel(5))
        torch.testing.assert_close(got, model(mel(5)), atol=0, rtol=0)
    assert got.shape == (1, 1, 5 * 480)
    torch.save({"weight": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a v4 vocoder"):
        load_mel_vocoder("v4", path)
    torch.save({**model.state_dict(), "cond.weight": torch.zeros(64, 512, 1)}, path)
    with pytest.raises(CheckpointError, match="unexpected 1: cond.weight"):
        load_mel_vocoder("v4", path)
    state = model.state_dict()
    state["ups.1.weight"] = state["ups.1.weight"][:, :, :-1]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="ups.1.weight has shape"):
        load_mel_vocoder("v4", path)
    torch.save({**model.state_dict(), "conv_post.bias": torch.tensor([float("nan")])}, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_mel_vocoder("v4", path)


# ---- ONNX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", [pytest.param("v3", marks=pytest.mark.slow), "v4"])  # v3: ~25 s of tracing
def test_onnx_export_matches_torch(tmp_path, which):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = tiny_bigvgan(seed=8) if which == "v3" else tiny_v4(seed=8)
    path = tmp_path / f"{which}.onnx"
    torch.onnx.export(
        model, (mel(10),), path, dynamo=False, opset_version=17, input_names=["mel"], output_names=["wav"],
        dynamic_axes={"mel": {0: "batch", 2: "frames"}, "wav": {0: "batch", 2: "samples"}},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames in (7, 23):  # not the traced length: the time axis must stay symbolic
        x = mel(frames, seed=frames)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"mel": x.numpy()})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


# ---- against upstream's recorded outputs -------------------------------------------------------


def recorded():
    if not (UPSTREAM / "expected.npz").exists():
        pytest.skip(f"upstream fixtures not recorded yet ({UPSTREAM})")
    return np.load(UPSTREAM / "expected.npz")


@pytest.mark.parametrize("version, path", [("v3", "bigvgan_tiny"), ("v4", "vocoder_v4_tiny.pth")])
def test_vocoders_match_upstream(version, path):
    expected = recorded()
    model = load_mel_vocoder(version, UPSTREAM / path)
    with torch.no_grad():
        wav = model(torch.from_numpy(expected["vocoder_in_mel"]).float()).numpy()
    want = expected[f"{version}_vocoder_out"]
    assert wav.shape == want.shape
    np.testing.assert_allclose(wav, want, atol=ATOL, rtol=0)
