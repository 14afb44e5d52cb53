"""scripts/bench_spectral_conv.py, the tool that re-measures ``FFT_PLAN`` on a new CPU: it runs every
candidate layer and the whole generator, and the two waveforms it compares agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="upstream-v2 fixtures not present")
def test_it_prints_every_candidate_and_the_generator_with_and_without_the_plan(tmp_path):
    (tmp_path / "sovits.pth").symlink_to(FIXTURES / "sovits_v2_tiny_pk_dict.pth")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench_spectral_conv.py"), "--threads", "1", "--frames", "1,3",
         "--model-dir", str(tmp_path), "--generator-frames", "260,300"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    from dora_gpt_sovits.sovits.spectral_conv import FFT_PLAN

    rows = re.findall(r"^\| (\d+) ch, (\d+) taps \(N = (\d+)\) \| ([\d.]+) / ([\d.]+) \|", done.stdout, re.M)
    measured = {(int(c), int(t)) for c, t, *_ in rows}
    assert set(FFT_PLAN) <= measured  # every planned layer is among the candidates
    generator_rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| ([\d.]+)× \| ([\d.e+-]+) \|$", done.stdout, re.M)
    # long enough that the tiny model's 64-channel 11-tap layers (planned from 2,560 samples) take the
    # spectral path: the two waveforms differ by rounding, not by nothing
    assert [int(r[0]) for r in generator_rows] == [260, 300]
    assert all(0 < float(r[4]) < 1e-5 for r in generator_rows)
