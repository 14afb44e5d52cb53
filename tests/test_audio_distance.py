"""The benchmark's streamed-vs-one-shot measures (benchmark/audio_distance.py) and the graph's run
schedule it streams with (benchmark/flow_matching.run_schedule)."""

from __future__ import annotations

import math

import pytest
import torch

from dora_gpt_sovits.benchmark import flow_matching
from dora_gpt_sovits.benchmark.audio_distance import distance, log_spectral_distance_db


def tone(n: int = 8000, gain: float = 0.5) -> torch.Tensor:
    return gain * torch.sin(torch.arange(n) * 0.07)


def test_identical_waveforms_are_at_distance_zero():
    d = distance(tone(), tone())
    # The two STFTs run on separate buffers; the FFT's SIMD path may follow their alignment, so the
    # log spectra can differ in the last bits (8e-5 dB seen once in CI): zero within 1e-3 dB.
    assert d["max_abs_diff"] == 0 and d["lsd_db"] < 1e-3 and d["snr_db"] > 150 and d["peak"] == pytest.approx(0.5)


def test_known_distances():
    a = 0.3 * torch.randn(8000, generator=torch.Generator().manual_seed(0))  # every bin above the floor
    d = distance(a, a * 1.1)  # error 0.1 a: SNR 20 dB; power x 1.21 in every bin: 0.83 dB
    assert d["snr_db"] == pytest.approx(20, abs=0.01)
    assert d["max_abs_diff"] == pytest.approx(0.1 * float(a.abs().max()), abs=1e-4)
    assert d["lsd_db"] == pytest.approx(10 * math.log10(1.21), abs=0.05)
    assert log_spectral_distance_db(a, -a) == pytest.approx(0, abs=1e-3)  # phase blind, unlike the SNR


def test_unequal_lengths_compare_the_common_part_and_short_clips_have_no_lsd():
    assert distance(tone(9000), tone(8000))["max_abs_diff"] == 0
    assert distance(tone(100), tone(100))["lsd_db"] is None


@pytest.mark.parametrize("tokens", [1, 3, 4, 5, 29, 61])
def test_runs_tile_the_segment_as_the_graph_cuts_it(tokens):
    runs = flow_matching.run_schedule(tokens)
    assert runs[0] == (0, min(tokens, flow_matching.FIRST_RUN_TOKENS))
    assert all(a == b for (_, a), (b, _) in zip(runs, runs[1:])) and runs[-1][1] == tokens
    assert all(0 < stop - start <= flow_matching.STREAM_RUN_TOKENS for start, stop in runs)
