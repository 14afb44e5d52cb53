"""Loading official GPT ``.ckpt`` files: strictness, one-line errors, and the random dev-model writer."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.checkpoint_io import CheckpointError
from dora_gpt_sovits.devmodels.gpt import write_random_gpt
from dora_gpt_sovits.gpt.generate import StopReason, generate
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.sampling import SamplingParams

GPT_FILE = FIXTURES / "gpt_v2_tiny.ckpt"
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest


@pytest.fixture(scope="module")
def official():
    return torch.load(GPT_FILE, map_location="cpu", weights_only=True)


def save_variant(tmp_path: Path, content) -> Path:
    path = tmp_path / "variant.ckpt"
    torch.save(content, path)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_gpt(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_fixture_config_and_dtype():
    model = load_gpt(GPT_FILE)
    cfg = model.config
    assert (cfg.vocab_size, cfg.phoneme_vocab_size, cfg.hidden_dim) == (1025, 732, 64)
    assert (cfg.n_head, cfg.n_layer, cfg.eos, cfg.ffn_dim) == (4, 2, 1024, 256)
    assert model.early_stop_num == 2700
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert model.layers[0].qkv.weight.shape == (192, 64)


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(GPT_FILE.read_bytes()[:200_000])
    assert "truncated" in load_error(path)


def test_sovits_file_passed_as_gpt():
    path = FIXTURES / "sovits_v2_tiny_pk_dict.pth"
    with pytest.raises(CheckpointError, match="SoVITS .* not a GPT") as info:
        load_gpt(path)
    assert "\n" not in str(info.value)


def test_missing_key(tmp_path, official):
    content = copy.copy(official)
    content["weight"] = {k: v for k, v in official["weight"].items() if "layers.1.norm2.bias" not in k}
    message = load_error(save_variant(tmp_path, content))
    assert "missing 1: model.h.layers.1.norm2.bias" in message


def test_extra_key(tmp_path, official):
    content = copy.copy(official)
    content["weight"] = {**official["weight"], "model.h.layers.2.norm1.weight": torch.ones(64)}
    assert "unexpected 1: model.h.layers.2.norm1.weight" in load_error(save_variant(tmp_path, content))


def test_wrong_shape(tmp_path, official):
    content = copy.copy(official)
    content["weight"] = {**official["weight"], "model.ar_predict_layer.weight": torch.zeros(1000, 64)}
    assert "ar_predict_layer.weight has shape [1000, 64]" in load_error(save_variant(tmp_path, content))


def test_head_count_must_divide(tmp_path, official):
    content = copy.deepcopy(official)
    content["config"]["model"]["head"] = 5
    assert "bad GPT config" in load_error(save_variant(tmp_path, content))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["config"]["model"].pop("head"), "has no 'head'"),
        (lambda c: c["config"].pop("data"), "no 'data' section"),
        (lambda c: c["config"]["model"].__setitem__("n_layer", "24"), "expected an integer"),
        (lambda c: c.pop("config"), "missing top-level keys ['config']"),
        (lambda c: c["config"]["model"].__setitem__("n_layer", 3), "missing"),  # config says 3 layers, file has 2
    ],
)
def test_bad_config(tmp_path, official, edit, needle):
    content = copy.deepcopy(official)
    edit(content)
    assert needle in load_error(save_variant(tmp_path, content))


def test_not_a_dict(tmp_path):
    assert "top level is list" in load_error(save_variant(tmp_path, [1, 2, 3]))


def test_tiny_random_model_roundtrip(tmp_path):
    path = tmp_path / "tiny.ckpt"
    write_random_gpt(path, "tiny", max_sec=1)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"weight", "config", "info"} and raw["info"] == "GPT-e15"
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in raw["weight"].items())
    model = load_gpt(path)
    assert model.early_stop_num == 50
    phones = torch.randint(0, 732, (30,))
    result = generate(model, phones, torch.randn(1024, 30), torch.randint(0, 1024, (50,)))
    assert result.stop_reason in (StopReason.EOS, StopReason.EARLY_STOP)
    assert len(result.generated) <= 51
    hidden = model.embed_semantic(torch.arange(10)[None])
    assert 0.1 < hidden.std() < 10  # the writer's scales keep activations of order 1


def test_v1_phoneme_table(tmp_path):
    path = tmp_path / "v1.ckpt"
    write_random_gpt(path, "tiny", phoneme_vocab_size=512)
    assert load_gpt(path).text_embedding.weight.shape == (512, 64)


def test_full_random_model_loads_in_seconds(tmp_path):
    path = tmp_path / "full.ckpt"
    write_random_gpt(path, "full", max_sec=2)
    start = time.perf_counter()
    model = load_gpt(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"full-size GPT took {elapsed:.1f} s to load"
    cfg = model.config
    assert (cfg.hidden_dim, cfg.n_head, cfg.n_layer, cfg.ffn_dim) == (512, 16, 24, 2048)
    assert sum(p.numel() for p in model.parameters()) == 77_606_402
    phones = torch.randint(0, 732, (20,))
    result = generate(
        model, phones, torch.zeros(1024, 20), torch.randint(0, 1024, (25,)), SamplingParams(early_stop_num=3)
    )
    assert len(result.generated) == 4
