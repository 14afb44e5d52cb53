"""The v3/v4 vocoder's warm-up meets the DiT shapes of the graph's first run.

The graph's first streamed run (the gpt's first chunk less the lookahead, with the first-run
shortcut) was the process's first DiT call at its shape: 21.6 s instead of ~1.6 s on the full-size
v4 DiT (docs/performance.md, 2026-12-07). These tests pin that ``warm_up`` makes exactly that call.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_mel_synthesis import MeanVocoder, recorded_calls, tiny_model

from dora_gpt_sovits.sovits import mel_synthesis as ms
from dora_gpt_sovits.sovits.mel_engine import MelVocoderEngine

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def engine_for(version: str, first_run: ms.FirstRun) -> MelVocoderEngine:
    vocoder = MeanVocoder(ms.CHUNK_PLANS[version].samples_per_frame)
    return MelVocoderEngine(tiny_model(version), vocoder, sample_steps=3, first_run=first_run)


def graph_first_run(engine: MelVocoderEngine, first_chunk: int, lookahead: int) -> None:
    """What the vocoder node does with a real voice's first token chunk."""
    reference_mel = np.random.default_rng(0).standard_normal((100, 150)).astype(np.float32)
    inputs = engine.condition(np.ones((1025, 60), np.float32), None, "", np.arange(50), reference_mel)
    decode = engine.make_decoder(inputs, np.arange(1, 30), 7, None, list(range(3, 20)))
    run = first_chunk - lookahead
    decode(np.zeros(0, np.int64), np.arange(run), np.arange(run, first_chunk), 0)


@pytest.mark.parametrize("version", ["v3", "v4"])
@pytest.mark.parametrize(("first_chunk", "lookahead"), [(8, 4), (8, 2), (10, 1)])
def test_the_warm_up_makes_the_first_runs_dit_call(monkeypatch, version, first_chunk, lookahead):
    calls = recorded_calls(monkeypatch)  # (prompt frames, new frames, steps) of each CFM call
    engine = engine_for(version, ms.FirstRun(prompt_frames=16))
    engine.warm_up(first_chunk_tokens=first_chunk, lookahead_tokens=lookahead)
    warm = list(calls)
    calls.clear()
    graph_first_run(engine, first_chunk, lookahead)
    assert warm == calls and warm[0][0] == 16 and warm[0][2] == 3


def test_the_warm_up_takes_the_first_run_steps(monkeypatch):
    calls = recorded_calls(monkeypatch)
    engine_for("v4", ms.FirstRun(prompt_frames=16, steps=1)).warm_up()
    assert [(p, s) for p, _, s in calls] == [(16, 1)]
