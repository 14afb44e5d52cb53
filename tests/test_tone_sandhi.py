"""Tone sandhi against behaviour recorded from upstream GPT-SoVITS (its own ToneSandhi class).

The fixture is written by scripts/record_tone_sandhi_fixtures.py; see its header for the
upstream commit and the jieba_fast / pypinyin versions it was recorded with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dora_gpt_sovits.text.jieba_seg import pos_cut
from dora_gpt_sovits.text.neutral_tone_words import NEUTRAL_TONE_WORDS, NEVER_NEUTRAL_WORDS
from dora_gpt_sovits.text.tone_sandhi import apply_tone_sandhi, dictionary_finals, merge_for_sandhi

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "tone_sandhi_upstream.json").read_text("utf-8"))
CASES = FIXTURE["cases"]
IDS = [case["text"] for case in CASES]


def _digest(words) -> dict:
    ordered = sorted(words)
    return {"count": len(ordered), "sha256": hashlib.sha256("\n".join(ordered).encode()).hexdigest()}


def _pairs(rows) -> list[tuple[str, str]]:
    return [(word, pos) for word, pos in rows]


def test_fixture_is_big_enough():
    assert len(CASES) >= 40
    assert sum(len(case["words"]) for case in CASES) >= 200


@pytest.mark.parametrize("name, ours", [("neutral", NEUTRAL_TONE_WORDS), ("never_neutral", NEVER_NEUTRAL_WORDS)])
def test_word_lists_equal_upstream(name, ours):
    assert _digest(ours) == FIXTURE["word_lists"][name]


def test_word_lists_spot_checks():
    for word in ("在乎", "不在", "什么", "怎么", "东西", "明白"):
        assert word in NEUTRAL_TONE_WORDS
    for word in ("晚上", "知道"):  # in neither upstream list
        assert word not in NEUTRAL_TONE_WORDS
    for word in ("想想", "数数", "考考", "吵吵", "打打", "熙熙", "攘攘", "男子"):
        assert word in NEVER_NEUTRAL_WORDS
    assert not NEUTRAL_TONE_WORDS & NEVER_NEUTRAL_WORDS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_segmentation_matches_upstream(case):
    assert pos_cut(case["text"]) == _pairs(case["segments"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_merge_matches_upstream(case):
    assert merge_for_sandhi(_pairs(case["segments"])) == _pairs(case["merged"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dictionary_finals_match_upstream(case):
    assert [dictionary_finals(w["word"]) for w in case["words"]] == [w["finals"] for w in case["words"]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sandhi_matches_upstream(case):
    got = [(w["word"], apply_tone_sandhi(w["word"], w["pos"], w["finals"])) for w in case["words"]]
    assert got == [(w["word"], w["sandhi"]) for w in case["words"]]


def test_sandhi_does_not_change_its_input():
    finals = ["ai3", "ai3"]
    apply_tone_sandhi("奶奶", "n", finals)
    assert finals == ["ai3", "ai3"]
