"""Malformed, hostile, truncated and wrong-kind files: one-line CheckpointError naming the file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.checkpoint_io import CheckpointError, read_checkpoint, write_tagged
from dora_gpt_sovits.sovits import load_sovits

SOVITS = FIXTURES / "sovits_v2_tiny_pk_dict.pth"

pytestmark = [
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present"),
    pytest.mark.usefixtures("torch_single_thread"),
]


@pytest.fixture(scope="module")
def content():
    return read_checkpoint(SOVITS).content


def refused(path: Path, match: str) -> str:
    with pytest.raises(CheckpointError) as e:
        load_sovits(path)
    message = str(e.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert match.lower() in message.lower(), message
    return message


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.pth", "not found")


def test_empty_and_garbage(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    refused(tmp_path / "empty.pth", "empty or truncated")
    (tmp_path / "junk.pth").write_bytes(b"\x89PNG\r\n" + bytes(range(256)) * 4)
    refused(tmp_path / "junk.pth", "not a PyTorch checkpoint")


def test_truncated(tmp_path):
    data = SOVITS.read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "half.pth", "truncated or corrupt")


def test_hostile_pickle_is_refused_not_executed(tmp_path):
    torch.save({"weight": {}, "config": Evil(), "info": "x"}, tmp_path / "evil.pth")
    refused(tmp_path / "evil.pth", "not weights")


def test_gpt_checkpoint_passed_as_sovits():
    refused(FIXTURES / "gpt_v2_tiny.ckpt", "GPT (text-to-semantic) checkpoint")


def test_wrong_top_level(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    refused(tmp_path / "list.pth", "top level is list")
    torch.save({"model": {}}, tmp_path / "dict.pth")
    refused(tmp_path / "dict.pth", "missing top-level keys")


def test_v3_v4_marks_without_flow_matching_weights(tmp_path, content):
    write_tagged(content, tmp_path / "v3.pth", b"02")
    refused(tmp_path / "v3.pth", "marked v3 by tag:02 but holds no flow-matching")
    write_tagged(content, tmp_path / "v4lora.pth", b"04")
    refused(tmp_path / "v4lora.pth", "marked v4 LoRA by tag:04 but holds no flow-matching")


def test_unmarked_flow_matching_file_needs_a_version(tmp_path, content):
    weights = dict(content["weight"], **{"cfm.estimator.proj_out.weight": torch.zeros(100, 1024)})
    torch.save({**content, "weight": weights}, tmp_path / "cfm.pth")
    refused(tmp_path / "cfm.pth", "set GSV_VERSION=v3 or GSV_VERSION=v4")


def test_v2_file_expected_as_v3(tmp_path):
    with pytest.raises(CheckpointError, match="this is a SoVITS v2 model .*not v3"):
        load_sovits(SOVITS, expected_version="v3")


def test_missing_and_unexpected_tensors(tmp_path, content):
    weights = dict(content["weight"])
    del weights["dec.conv_post.weight"]
    weights["dec.extra.weight"] = torch.zeros(1)
    torch.save({**content, "weight": weights}, tmp_path / "keys.pth")
    message = refused(tmp_path / "keys.pth", "do not match")
    assert "dec.conv_post.weight" in message and "dec.extra.weight" in message


def test_incomplete_weight_norm_pair(tmp_path, content):
    weights = dict(content["weight"])
    del weights["dec.ups.0.weight_g"]
    torch.save({**content, "weight": weights}, tmp_path / "wn.pth")
    refused(tmp_path / "wn.pth", "weight_g missing")


def test_config_disagrees_with_weights(tmp_path, content):
    config = {**content["config"], "model": {**content["config"]["model"], "filter_channels": 768}}
    torch.save({**content, "config": config}, tmp_path / "shape.pth")
    refused(tmp_path / "shape.pth", "has shape")


def test_malformed_config(tmp_path, content):
    torch.save({**content, "config": {"model": {}}}, tmp_path / "cfg.pth")
    refused(tmp_path / "cfg.pth", "malformed SoVITS config")


def test_bad_symbol_table(tmp_path, content):
    weights = dict(content["weight"], **{"enc_p.text_embedding.weight": torch.zeros(500, 192, dtype=torch.half)})
    torch.save({**content, "weight": weights}, tmp_path / "sym.pth")
    refused(tmp_path / "sym.pth", "expected 322 (v1) or 732 (v2)")


def test_unknown_header_tag(tmp_path):
    data = bytearray(SOVITS.read_bytes())
    data[:2] = b"09"
    (tmp_path / "tag.pth").write_bytes(bytes(data))
    refused(tmp_path / "tag.pth", "version tag")


def test_non_tensor_weights(tmp_path, content):
    torch.save({**content, "weight": {"a": 1}}, tmp_path / "nt.pth")
    refused(tmp_path / "nt.pth", "not a dict of tensors")


def test_in_memory_round_trip_keeps_loading(tmp_path, content):
    """Sanity check for the edits above: re-saving the unmodified content loads fine."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    (tmp_path / "same.pth").write_bytes(buffer.getvalue())
    assert load_sovits(tmp_path / "same.pth").version.model_version == "v2"
