"""Checkpoint *contents*, not just the container (issue #15, class 5): each hostile or broken file
is refused with one CheckpointError line naming the file, before any model is built."""

from __future__ import annotations

import copy
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.checkpoint_io import CheckpointError, read_checkpoint
from dora_gpt_sovits.encoders.hubert import load_hubert
from dora_gpt_sovits.gpt import loader as gpt_loader
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.sovits import load_sovits
from dora_gpt_sovits.sovits import loader as sovits_loader

GPT_FILE = FIXTURES / "gpt_v2_tiny.ckpt"
SOVITS_FILE = FIXTURES / "sovits_v2_tiny_pk_dict.pth"
pytestmark = [
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present"),
    pytest.mark.usefixtures("torch_single_thread"),
]
LOADERS = {"gpt": load_gpt, "sovits": load_sovits}


@pytest.fixture(scope="module")
def official():
    return {"gpt": read_checkpoint(GPT_FILE).content, "sovits": read_checkpoint(SOVITS_FILE).content}


def refused(kind: str, path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        LOADERS[kind](path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def saved(tmp_path: Path, content) -> Path:
    path = tmp_path / "edited.pth"
    torch.save(content, path)
    return path


def first_weight(content) -> str:
    return next(iter(content["weight"]))


def nested_config(content, kind: str) -> dict:
    """The dict whose fields the loader reads: GPT ``config['model']``, SoVITS ``config['model']``."""
    return content["config"]["model"]


def sparse(content, kind):
    name = first_weight(content)
    content["weight"][name] = content["weight"][name].float().to_sparse()
    return name


def sparse_out_of_bounds(content, kind):
    # .to_dense() of this segfaulted the node; it must never be touched.
    name = first_weight(content)
    indices = torch.tensor([[0, 5_000_000]])
    content["weight"][name] = torch.sparse_coo_tensor(indices, torch.ones(2), (10,), check_invariants=False)
    return name


def integer_key(content, kind):
    content["config"][3] = "three"


def integer_weight_key(content, kind):
    content["weight"][7] = torch.zeros(1)


def self_reference(content, kind):
    content["config"]["model"]["self"] = content["config"]


def deep_sharing(content, kind):
    shared: list = [0]
    for _ in range(30):  # 2^30 objects as a tree, 31 lists as a pickle
        shared = [shared, shared]
    content["config"]["extra"] = shared


def deep_nesting(content, kind):
    deep: list = []
    for _ in range(100):  # torch.save recurses, so not much deeper; past our limit of 32
        deep = [deep]
    content["config"]["extra"] = deep


def nan_weight(content, kind):
    name = first_weight(content)
    tensor = content["weight"][name].clone()
    tensor.view(-1)[3] = float("nan")
    content["weight"][name] = tensor
    return name


def inf_weight(content, kind):
    name = list(content["weight"])[-1]
    tensor = content["weight"][name].clone()
    tensor.view(-1)[0] = float("-inf")
    content["weight"][name] = tensor
    return name


def stride_zero(content, kind):
    # 20 KB on disk, 5.7 GB once anything calls .float() or .to() on it.
    content["weight"]["model.huge" if kind == "gpt" else "dec.huge"] = torch.zeros(()).expand(100_000, 15_300)


CONTENT_CASES = [
    (sparse, "is a sparse_coo tensor; only dense tensors are accepted"),
    (sparse_out_of_bounds, "is a sparse_coo tensor"),
    (integer_key, "checkpoint['config'] has the key 3 (int); checkpoint keys must be strings"),
    (integer_weight_key, "has the key 7 (int)"),
    (self_reference, "contains itself (a reference cycle)"),
    (deep_sharing, "content expands to more than 200000 objects"),
    (deep_nesting, "content nests deeper than 32 levels"),
    (nan_weight, "holds 1 NaN/inf values"),
    (inf_weight, "holds 1 NaN/inf values"),
    (stride_zero, "tensors would take 58"),  # 5836 MiB
]


@pytest.mark.parametrize("kind", ["gpt", "sovits"])
@pytest.mark.parametrize("edit, needle", CONTENT_CASES, ids=[c[0].__name__ for c in CONTENT_CASES])
def test_hostile_content_is_refused_with_one_line(tmp_path, official, kind, edit, needle):
    content = copy.deepcopy(official[kind])
    named = edit(content, kind)
    message = refused(kind, saved(tmp_path, content), needle)
    if named:  # the offending tensor is named
        assert f"checkpoint['weight'][{named!r}]" in message


def test_a_compressed_bomb_is_refused_from_the_zip_directory(tmp_path):
    # A deflated entry of 320 MiB of zeros in a 1.5 MB file: torch.load would inflate it in memory.
    path = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(GPT_FILE) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for entry in source.infolist():
            out.writestr(entry.filename, source.read(entry.filename))
        prefix = source.namelist()[0].split("/")[0]
        with out.open(f"{prefix}/data/bomb", "w", force_zip64=True) as f:
            zeros = bytes(4 << 20)
            for _ in range(80):
                f.write(zeros)
    refused("gpt", path, "archive entries inflate to 32", "refusing a compressed bomb")


@pytest.mark.parametrize(
    "kind, section, key, value, needle",
    [
        ("gpt", "model", "n_layer", 20_000, "n_layer is 20000, expected an integer in 1..128"),
        ("sovits", "model", "n_layers", 20_000, "config n_layers is 20000, expected 1..128"),
        ("gpt", "model", "head", 0, "n_head is 0"),
        ("sovits", "model", "n_heads", 0, "config n_heads is 0, expected 1..64"),
        ("sovits", "model", "kernel_size", -3, "config kernel_size is -3"),
        ("sovits", "model", "resblock_kernel_sizes", [3, -7, 11], "an entry of resblock_kernel_sizes is -7"),
        ("sovits", "model", "upsample_kernel_sizes", [16, 16, 8, 2, -2], "an entry of upsample_kernel_sizes is -2"),
        ("sovits", "model", "resblock_dilation_sizes", [[1, 3, 5], [1, 0, 5], [1, 3, 5]], "a dilation is 0"),
        ("sovits", "model", "hidden_channels", 192.0, "hidden_channels is 192.0 (float), expected an integer"),
        ("sovits", "data", "filter_length", "2048", "filter_length is '2048' (str)"),
        ("gpt", "data", "max_sec", float("nan"), "max_sec is nan, expected a finite number"),
        ("gpt", "data", "max_sec", float("inf"), "max_sec is inf"),
        ("gpt", "data", "max_sec", -1.0, "max_sec is -1.0"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_config_values_are_typed_and_in_range_before_building(
    tmp_path, official, monkeypatch, kind, section, key, value, needle
):
    content = copy.deepcopy(official[kind])
    content["config"][section][key] = value
    path = saved(tmp_path, content)

    def never_built(*args, **kwargs):
        raise AssertionError("the model was built before the config was checked")

    # The 20,000-layer config took 51 s (GPT) and 184 s (SoVITS) to fail at the weight names; a
    # refusal that comes from the config check must not have built the model at all.
    monkeypatch.setattr(gpt_loader, "Text2Semantic", never_built)
    monkeypatch.setattr(sovits_loader, "Synthesizer", never_built)
    refused(kind, path, needle)


def test_weight_norm_pairs_that_would_divide_by_zero_or_not_fit(tmp_path, official):
    content = copy.deepcopy(official["sovits"])
    content["weight"]["dec.ups.0.weight_v"] = torch.zeros_like(content["weight"]["dec.ups.0.weight_v"])
    refused("sovits", saved(tmp_path, content), "dec.ups.0.weight_v has an all-zero row")
    content = copy.deepcopy(official["sovits"])
    content["weight"]["dec.ups.0.weight_g"] = torch.ones(3, 1, 1, dtype=torch.half)
    refused("sovits", saved(tmp_path, content), "weight-norm pair of dec.ups.0 does not fit")


@pytest.mark.parametrize("kind", ["gpt", "sovits"])
def test_a_fifo_or_device_is_refused_without_reading(tmp_path, kind):
    import os

    fifo = tmp_path / "model.pth"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a file (a FIFO"), (Path("/dev/zero"), "not a file (a character device)")):
        outcome: list = []
        thread = threading.Thread(
            target=lambda outcome=outcome, path=path: outcome.append(_error(LOADERS[kind], path)), daemon=True
        )
        thread.start()
        thread.join(60)  # a guard against blocking for ever, not a timing: the refusal is immediate
        assert outcome, f"{path}: the loader blocked reading it"
        assert isinstance(outcome[0], CheckpointError) and words in str(outcome[0]) and str(path) in str(outcome[0])


def _error(load, path):
    try:
        load(path)
    except Exception as e:  # noqa: BLE001 - returned to the test
        return e
    return None


# ---------------------------------------------------------------- Hugging Face folders


@pytest.fixture
def hubert_copy(tmp_path):
    directory = tmp_path / "hubert"
    shutil.copytree(FIXTURES / "hubert_tiny", directory)
    return directory


def hubert_refused(directory: Path, needle: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_hubert(directory)
    assert "\n" not in str(info.value) and str(directory) in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("num_hidden_layers", 20_000, "num_hidden_layers is 20000, expected an integer in 1..128"),
        ("num_attention_heads", 0, "num_attention_heads is 0"),
        ("conv_kernel", [10, 3, 3, 3, 3, -2, 2], "an entry of conv_kernel is -2"),
    ],
)
def test_hubert_config_is_checked_before_building(hubert_copy, key, value, needle):
    config = json.loads((hubert_copy / "config.json").read_text())
    config[key] = value
    (hubert_copy / "config.json").write_text(json.dumps(config))
    hubert_refused(hubert_copy, needle)


def test_hubert_nan_weights_are_refused_by_name(hubert_copy):
    state = torch.load(hubert_copy / "pytorch_model.bin", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    torch.save(state, hubert_copy / "pytorch_model.bin")
    hubert_refused(hubert_copy, "holds 1 NaN/inf values")
