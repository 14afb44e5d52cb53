"""CN-HuBERT prompt path against upstream golden outputs, and the HuBERT directory loader.

HuBERT tolerance: the fixture README suggests ~1e-4 for HuBERT features; we measure ~6e-6 on
values up to 6.6 (float32 round-off through the conv stack and transformer), and bound at 1e-4
absolute. Prompt codes must match exactly (they are argmins; the nearest/second-nearest gap is
far above this error).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.checkpoint_io import CheckpointError
from dora_gpt_sovits.devmodels.hubert import write_random_hubert
from dora_gpt_sovits.encoders.hubert import PROMPT_PAD_SAMPLES, hubert_features, load_hubert
from dora_gpt_sovits.sovits import load_sovits

HUBERT_DIR = FIXTURES / "hubert_tiny"

pytestmark = [
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present"),
    pytest.mark.usefixtures("torch_single_thread"),
]


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "expected.npz")


@pytest.fixture(scope="module")
def hubert():
    return load_hubert(HUBERT_DIR)


def test_pad_is_upstreams_quirk():
    assert PROMPT_PAD_SAMPLES == 9600  # int(32000 * 0.3) appended to 16 kHz audio


def test_weight_norm_loaded_and_folded(hubert):
    conv = hubert.encoder.pos_conv_embed.conv
    assert not hasattr(conv, "parametrizations")
    stored = torch.load(HUBERT_DIR / "pytorch_model.bin", weights_only=True)
    g = stored["encoder.pos_conv_embed.conv.weight_g"].float()
    v = stored["encoder.pos_conv_embed.conv.weight_v"].float()
    # Weight norm over the kernel axis (dim=2): the norm runs over axes 0 and 1.
    folded = g * v / v.norm(dim=(0, 1), keepdim=True)
    torch.testing.assert_close(conv.weight, folded, rtol=1e-5, atol=1e-6)


def test_last_hidden_state(hubert, expected):
    feats = hubert_features(hubert, torch.from_numpy(expected["ref_wav16k"]))
    want = expected["prompt_hubert_last_hidden"]
    assert feats.shape == (1, *want.shape)
    assert np.abs(feats[0].numpy() - want).max() < 1e-4


def test_prompt_codes_end_to_end(hubert, expected):
    sovits = load_sovits(FIXTURES / "sovits_v2_tiny_pk_dict.pth")
    codes = sovits.extract_prompt_codes(hubert_features(hubert, torch.from_numpy(expected["ref_wav16k"])))
    np.testing.assert_array_equal(codes[0, 0].numpy(), expected["prompt_codes"])


def test_bf16_smoke(expected):
    model = load_hubert(HUBERT_DIR, dtype=torch.bfloat16)
    feats = hubert_features(model, torch.from_numpy(expected["ref_wav16k"]))
    assert feats.dtype == torch.bfloat16 and torch.isfinite(feats).all()
    assert (feats[0].float().numpy() - expected["prompt_hubert_last_hidden"]).std() < 0.05


@pytest.mark.parametrize("remove", ["config.json", "pytorch_model.bin", None])
def test_missing_files_fail_clearly(tmp_path, remove):
    target = tmp_path / "hubert"
    if remove is None:
        target = tmp_path / "does-not-exist"
    else:
        shutil.copytree(HUBERT_DIR, target)
        (target / remove).unlink()
    with pytest.raises(CheckpointError) as e:
        load_hubert(target)
    assert "\n" not in str(e.value) and str(target) in str(e.value)


def test_mismatched_weights_fail_clearly(tmp_path):
    target = tmp_path / "hubert"
    shutil.copytree(HUBERT_DIR, target)
    state = torch.load(target / "pytorch_model.bin", weights_only=True)
    del state["encoder.layers.0.attention.q_proj.weight"]
    state["encoder.unused.weight"] = torch.zeros(3)
    torch.save(state, target / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="missing keys.*q_proj.*unexpected keys.*unused"):
        load_hubert(target)


def test_dev_hubert_tiny_round_trip(tmp_path):
    write_random_hubert(tmp_path / "h", size="tiny")
    assert {p.name for p in (tmp_path / "h").iterdir()} == {
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    }
    stored = torch.load(tmp_path / "h" / "pytorch_model.bin", weights_only=True)
    assert "encoder.pos_conv_embed.conv.weight_g" in stored and all(v.dtype == torch.float16 for v in stored.values())
    model = load_hubert(tmp_path / "h")
    feats = hubert_features(model, torch.randn(16000 * 3) * 0.3)
    assert feats.shape == (1, 768, (16000 * 3 + PROMPT_PAD_SAMPLES) // 320 - 1)
    assert torch.isfinite(feats).all() and 0.1 < feats.std() < 10
