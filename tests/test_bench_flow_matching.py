"""``bench.py --version v4 --sample-steps N`` end to end on a tiny random v4 (shared/benchmark/cli.py's
``run_flow_matching_sweep``): the report it writes, and ``--vocoder-dtype`` giving the flow matching
and the vocoder their own precision while the GPT stays at ``--dtype`` (as dataflows/fast-cpu.yml
runs them; docs/performance.md, "v4 one-shot on the AMD EPYC")."""

from __future__ import annotations

import json

import pytest
import torch

from dora_gpt_sovits.benchmark import cli, inprocess

pytestmark = pytest.mark.slow  # builds a tiny v4 bundle and runs the sweep (~20 s)


@pytest.fixture(scope="module")
def tiny_v4(tmp_path_factory):
    from dora_gpt_sovits.devmodels.bundle import build_bundle

    return build_bundle(tmp_path_factory.mktemp("models") / "dev-tiny-v4", size="tiny", version="v4")


def test_the_sweep_runs_the_gpt_at_dtype_and_the_vocoder_stage_at_vocoder_dtype(tiny_v4, tmp_path, monkeypatch):
    loaded, load_models = [], inprocess.load_models

    def spy(paths, device, dtype, vocoder_dtype=None):
        loaded.append(load_models(paths, device, dtype, vocoder_dtype))
        return loaded[-1]

    monkeypatch.setattr(cli, "load_models", spy)
    opts = cli.Options(
        out=tmp_path / "out",
        model_dir=tiny_v4,
        version="v4",
        sample_steps=[2],
        tokens=6,
        repeats=1,
        lengths=["short"],
        languages=["en"],
        vocoder_dtype="bfloat16",
        progress=False,
    )
    cli.run_flow_matching_sweep(opts)
    (models,) = loaded
    assert next(models.gpt.parameters()).dtype == torch.float32
    assert next(models.sovits.estimator.parameters()).dtype == torch.bfloat16
    doc = json.loads((opts.out / "flow_matching.json").read_text())
    assert (doc["dtype"], doc["vocoder_dtype"]) == ("float32", "bfloat16")
    (row,) = doc["rows"]
    assert row["sample_steps"] == 2 and row["wall_s"] > 0 and row["streamed_ttfa_s"] > 0
    markdown = (opts.out / "flow_matching.md").read_text()
    assert "threads, float32, vocoder stage bfloat16)" in markdown.splitlines()[0]
