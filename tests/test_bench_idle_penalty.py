"""scripts/bench_idle_penalty.py's pure parts: settings parsed strictly and applied to a fresh
process's environment, per-call costs counted, medians and the table (the model runs are the
benchmark's, not the tests')."""

from __future__ import annotations

import functools
import importlib.util
import mmap
import sys

import pytest
from conftest import REPO


@functools.cache
def bench():
    spec = importlib.util.spec_from_file_location("bench_idle_penalty", REPO / "scripts" / "bench_idle_penalty.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_a_setting_sets_and_removes_variables():
    b = bench()
    setting = b.Setting.parse("spin:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=10000,MALLOC_TOP_PAD_=")
    assert setting.name == "spin"
    assert setting.env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "MALLOC_TOP_PAD_": None}
    env = setting.environment({"OMP_WAIT_POLICY": "ACTIVE", "MALLOC_TOP_PAD_": "1", "PATH": "/bin"})
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "PATH": "/bin"}
    assert setting.label() == "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=10000, MALLOC_TOP_PAD_ unset"
    assert b.Setting.parse("inherited").environment({"A": "1"}) == {"A": "1"}


@pytest.mark.parametrize(
    "text", [":OMP_WAIT_POLICY=PASSIVE", "x:OMP_WAIT_POLICY", "x:=1", "x:BAD-NAME=1", "x:GSV_THREADS=1"]
)
def test_a_malformed_or_reserved_setting_is_refused(text):
    with pytest.raises(ValueError, match="setting"):
        bench().Setting.parse(text)


def test_measure_counts_the_page_faults_of_fresh_memory():
    b = bench()
    region = mmap.mmap(-1, 8 << 20)

    def touch():
        for offset in range(0, len(region), 4096):
            region[offset] = 1

    usage = b.measure(touch)
    assert usage.minor_faults > 0 and usage.ms > 0
    assert b.measure(touch).minor_faults < usage.minor_faults  # the pages are now mapped
    region.close()


def test_summary_and_table_give_the_medians_and_the_penalty():
    b = bench()
    fast = b.summarize([b.Usage(100, 0, 10), b.Usage(120, 2, 12), b.Usage(110, 1, 11)])
    slow = b.summarize([b.Usage(190, 50, 40), b.Usage(170, 30, 20)])
    assert fast == {"ms": 110, "minor_faults": 1, "switches": 11, "n": 3, "all_ms": [100, 120, 110]}
    assert slow["ms"] == 180 and slow["minor_faults"] == 40
    row = {"setting": "passive", "results": {s: {"0": fast, "0.5": fast, "4": slow} for s in b.STAGES}}
    table = b.markdown([row], [0.5, 4.0])
    assert "| after 0.5 s idle ms | after 4 s idle ms |" in table
    assert "| passive | gpt | 110 | 110 | 180 | +70 | 1 / 40 | 11 / 30 |" in table
    with pytest.raises(ValueError, match="no measured calls"):
        b.summarize([])
