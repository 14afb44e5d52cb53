"""The gpt node yields the cores to the vocoder unless told otherwise (nodes/gpt_decoder.py main)."""

from __future__ import annotations

from dora_gpt_sovits.nodes.gpt_decoder import DEFAULT_NICE, with_default_nice
from dora_gpt_sovits.settings import RuntimeSettings


def test_the_gpt_node_runs_at_a_lower_priority_by_default():
    env: dict[str, str] = {}
    with_default_nice(env)
    assert DEFAULT_NICE > 0 and RuntimeSettings.from_env(env).nice == DEFAULT_NICE


def test_an_explicit_priority_is_kept_even_the_normal_one():
    for value in ("0", "5", "-2"):
        env = {"GSV_NICE": value}
        with_default_nice(env)
        assert RuntimeSettings.from_env(env).nice == int(value)
