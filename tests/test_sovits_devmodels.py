"""Random dev SoVITS files: official format, load through the real loader, produce audible audio."""

from __future__ import annotations

import time

import pytest
import torch

from dora_gpt_sovits.audio.spectrogram import reference_spectrogram
from dora_gpt_sovits.checkpoint_io import read_checkpoint
from dora_gpt_sovits.devmodels.sovits import official_config, random_state, write_random_sovits
from dora_gpt_sovits.sovits import Synthesizer, load_sovits

pytestmark = pytest.mark.usefixtures("torch_single_thread")


TAGS = {"v1": None, "v2": None, "v2Pro": b"05", "v2ProPlus": b"06"}


def decode_random(model, n_tokens: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spec = reference_spectrogram(0.3 * torch.randn(1, 32000 * 3, generator=g))
    codes = torch.randint(0, 1024, (1, 1, n_tokens), generator=g)
    phones = torch.randint(0, model.config.n_symbols, (1, 12), generator=g)
    sv = torch.randn(1, 20480, generator=g) if model.config.is_pro else None
    return model.decode(codes, phones, [spec], noise_scale=0.5, sv_emb=sv, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2", "v2Pro", "v2ProPlus"])
def test_tiny_round_trip(tmp_path, version):
    path = tmp_path / f"{version}.pth"
    write_random_sovits(path, version=version, size="tiny", seed=1)
    raw = read_checkpoint(path)
    assert raw.header_tag == TAGS[version]
    weight = raw.content["weight"]
    assert set(raw.content) == {"weight", "config", "info"}
    assert all(v.dtype == torch.float16 for v in weight.values())
    assert not any(k.startswith("enc_q.") for k in weight)
    # ConvTranspose weight norm keeps axis 0, the input channels.
    assert weight["dec.ups.0.weight_g"].shape == (weight["dec.ups.0.weight_v"].shape[0], 1, 1)
    assert "flow.flows.6.enc.cond_layer.weight_v" in weight and "dec.resblocks.14.convs2.2.weight_g" in weight
    assert type(raw.content["config"]["model"]) is dict and raw.content["config"]["data"]["hop_length"] == 640

    model = load_sovits(path)
    assert model.version.model_version == version
    assert model.version.symbol_version == ("v1" if version == "v1" else "v2")
    wav = decode_random(model)
    assert wav.shape == (1, 1, 30 * 1280)
    assert torch.isfinite(wav).all()
    assert 0.02 < wav.std() < 0.5 and wav.abs().max() < 1  # audible, not saturated


def test_seed_decides_weights():
    config = official_config("v2", "tiny")
    a, b, c = random_state(config, 0), random_state(config, 0), random_state(config, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["dec.conv_post.weight"], c["dec.conv_post.weight"])


@pytest.mark.slow
def test_header_choice(tmp_path):
    write_random_sovits(tmp_path / "v2.pth", "v2", "tiny", header="01")
    v = load_sovits(tmp_path / "v2.pth").version
    assert (v.source, v.model_version) == ("tag:01", "v2")
    # An untagged Pro file: upstream would guess v1/v2 from the size; the weights say Pro.
    write_random_sovits(tmp_path / "plus.pth", "v2ProPlus", "tiny", header="PK")
    v = load_sovits(tmp_path / "plus.pth").version
    assert (v.source, v.model_version) == ("size", "v2ProPlus") and v.header_or_hash_version in ("v1", "v2")
    with pytest.raises(ValueError):
        write_random_sovits(tmp_path / "x.pth", "v2", "tiny", header="99")


def test_full_size_shapes_match_official_configs():
    expected = {
        "v2": {
            "dec.conv_pre.weight": (512, 192, 7),
            "dec.ups.0.weight": (512, 256, 16),
            "ref_enc.proj.weight": (512, 128),
        },
        "v2Pro": {
            "dec.ups.0.weight": (512, 256, 16),
            "sv_emb.weight": (1024, 20480),
            "ge_to512.weight": (512, 1024),
            "prelu.weight": (1024,),
            "ref_enc.proj.weight": (1024, 128),
        },
        "v2ProPlus": {
            "dec.conv_pre.weight": (768, 192, 7),
            "dec.ups.0.weight": (768, 384, 20),
            "dec.conv_post.weight": (1, 24, 7),
            "flow.couplings.0.enc.cond_layer.weight": (1536, 1024, 1),
        },
        "v1": {"enc_p.text_embedding.weight": (322, 192), "ref_enc.spectral_in.weight": (128, 1025)},
    }
    for version, shapes in expected.items():
        with torch.device("meta"):
            state = Synthesizer(official_config(version, "full")).state_dict()
        assert state["enc_p.encoder_text.ffn_layers.5.conv_1.weight"].shape == (768, 192, 3)
        for name, shape in shapes.items():
            assert tuple(state[name].shape) == shape, (version, name)


@pytest.mark.slow
def test_full_size_v2_loads_in_seconds(tmp_path):
    path = tmp_path / "s2G2333k.pth"
    write_random_sovits(path, "v2", "full")
    start = time.perf_counter()
    model = load_sovits(path)
    seconds = time.perf_counter() - start
    print(f"full-size v2 load: {seconds:.2f} s ({path.stat().st_size / 1e6:.0f} MB)")
    assert seconds < 10  # ~0.3-1 s measured on 2 shared cores; the bound allows a busy machine
    assert model.config.upsample_initial_channel == 512 and model.config.n_layers == 6
    wav = decode_random(model, n_tokens=5)
    assert torch.isfinite(wav).all() and wav.std() > 0.02
