"""Every case of upstream's own `clean_text` output (text_frontend.json) reproduced exactly."""

import json
from pathlib import Path

import pytest

from dora_gpt_sovits.text.frontend import clean_text
from dora_gpt_sovits.text.symbols import phones_to_ids

FIXTURE = Path(__file__).resolve().parents[2] / "shared/fixtures/upstream-v2" / "text_frontend.json"
GROUPS = ("zh_v2", "zh_v1", "en_v2")


def _cases():
    if not FIXTURE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{FIXTURE} not available"))]
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return [pytest.param(case, id=f"{group}-{i}") for group in GROUPS for i, case in enumerate(data[group])]


@pytest.mark.parametrize("case", _cases())
def test_clean_text_matches_upstream(case):
    phones, word2ph, norm_text = clean_text(case["text"], case["language"], case["version"])
    assert norm_text == case["norm_text"]
    assert phones == case["phones"]
    assert word2ph == case["word2ph"]
    assert phones_to_ids(phones, case["version"]) == case["phone_ids"]


def test_fixture_has_all_groups():
    if not FIXTURE.exists():
        pytest.skip("fixture not available")
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert [len(data[g]) for g in GROUPS] == [16, 16, 15]
