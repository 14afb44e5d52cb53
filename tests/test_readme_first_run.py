"""What a newcomer's first runs rely on, without a graph: where the WAV lands whichever YAML folder
the sink runs in, and a kernel build that says it runs instead of minutes of silence."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from dora_gpt_sovits.audio.output_path import output_path, project_dir
from dora_gpt_sovits.gpt import half_matvec as hm


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository's shape: pyproject.toml at the top, graphs in dataflows/."""
    root = tmp_path / "repo"
    (root / "dataflows").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def test_a_relative_wav_path_lands_in_the_repository_from_any_yaml_folder(repo):
    # dora runs the nodes in the YAML's folder: dataflow.yml's in the repository, the rest in dataflows/
    assert output_path("out/speech.wav", repo) == repo / "out" / "speech.wav"
    assert output_path("out/speech.wav", repo / "dataflows") == repo / "out" / "speech.wav"
    assert output_path(Path("out/speech.wav"), repo / "dataflows") == repo / "out" / "speech.wav"


def test_an_absolute_wav_path_is_kept_and_a_home_path_expanded(repo, monkeypatch, tmp_path):
    assert output_path(tmp_path / "x.wav", repo / "dataflows") == tmp_path / "x.wav"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_path("~/y.wav", repo / "dataflows") == tmp_path / "y.wav"


def test_a_git_checkout_without_pyproject_is_a_project_too(tmp_path):
    (tmp_path / "r" / ".git").mkdir(parents=True)
    (tmp_path / "r" / "graphs" / "deep").mkdir(parents=True)
    assert project_dir(tmp_path / "r" / "graphs" / "deep") == (tmp_path / "r").resolve()


def test_outside_any_project_a_relative_path_stays_in_the_working_directory(tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    if any((p / m).exists() for p in lone.resolve().parents for m in ("pyproject.toml", ".git")):
        pytest.skip("the temporary folder lies inside a project")  # not on CI's or any usual /tmp
    assert output_path("out/a.wav", lone) == lone.resolve() / "out" / "a.wav"


def test_the_sink_writes_where_the_rule_says_and_logs_the_absolute_path(repo, caplog):
    import numpy as np

    from dora_gpt_sovits import messages as m
    from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage

    stage = AudioSinkStage("wav", output_path("out/speech.wav", repo / "dataflows"))
    key = m.SegmentKey("u1", 0, True, text_received_at=1.0)
    chunk = m.AudioChunk(key, np.full(3200, 0.1, np.float32), 32000, 0, True)
    with caplog.at_level(logging.INFO, logger="gsv.audio-sink"):
        list(stage.handle(m.AUDIO, *chunk.to_message()))
    assert (repo / "out" / "speech.wav").is_file() and not (repo / "dataflows" / "out").exists()
    assert f"wrote {repo.resolve() / 'out' / 'speech.wav'}" in caplog.text


def test_a_kernel_build_is_announced_and_says_it_is_still_running(monkeypatch, tmp_path, caplog):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: time.sleep(0.35))
    monkeypatch.setattr(hm, "BUILD_NOTE_EVERY_S", 0.1)
    with caplog.at_level(logging.WARNING, logger="gsv.gpt"):
        hm._load_or_build(tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("building the C++ decode kernels (half_matvec.cpp, decode_layers.cpp)")
    assert str(tmp_path) in lines[0] and "min" in lines[0]
    assert 2 <= sum(line.startswith("still building the C++ decode kernels") for line in lines) <= 4
    assert all(r.levelno == logging.WARNING for r in caplog.records)  # before dora's log bridge only these show


def test_a_finished_build_loads_without_announcing_anything(monkeypatch, tmp_path, caplog):
    import torch

    (tmp_path / "finished").touch()
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    with caplog.at_level(logging.INFO, logger="gsv.gpt"):
        hm._load_or_build(tmp_path)
    assert caplog.text == ""


def test_the_setup_step_exits_with_the_reason_where_no_kernel_can_be_built(monkeypatch, capsys):
    monkeypatch.setattr(hm, "_unsupported_reason", lambda: "no C++ compiler ('c++' is not on PATH)")
    hm._build.cache_clear()
    try:
        with pytest.raises(SystemExit) as caught:
            hm.main()
    finally:
        hm._build.cache_clear()
    assert caught.value.code == 1
    assert "cannot be built here: no C++ compiler" in capsys.readouterr().err


# What dora 1.1's Node() raised in each waiting node when bert, lacking its model, exited first (a
# fresh clone's service block without GSV_MODEL_DIR), and a Rust backtrace after it.
JOIN_ERROR = """Could not initiate node from environment variable. For dynamic node, please add a node id in the initialization function.

Caused by:
   0: internal error
   1: failed to init event stream
   2: subscribe failed: Node bert exited before initializing dora. For more information, run `dora logs 01a24dd2 --node bert`.

Location:
    apis/python/node/src/lib.rs:192:39

Stack backtrace:
   0: <unknown>
   1: <unknown>"""


def test_a_node_that_cannot_join_names_the_node_that_failed_first_in_one_line(monkeypatch, capsys):
    import dora

    from dora_gpt_sovits.node_runtime import connect, join_failure

    assert join_failure(JOIN_ERROR) == (
        "subscribe failed: Node bert exited before initializing dora. "
        "For more information, run `dora logs 01a24dd2 --node bert`."
    )
    assert join_failure("something else\nentirely") == "something else"

    def refuse():
        raise RuntimeError(JOIN_ERROR)

    monkeypatch.setattr(dora, "Node", refuse)
    with pytest.raises(SystemExit) as caught:
        connect()
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: could not join the dataflow: subscribe failed: Node bert")
