"""Cantonese frontend against upstream GPT-SoVITS' own output (tests/fixtures/upstream_text_yue.json,
recorded by scripts/record_upstream_cantonese.py at 48b1a01 with the same ToJyutping/cn2an)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dora_gpt_sovits.text import cantonese
from dora_gpt_sovits.text.errors import FrontendError, MissingLanguagePackage
from dora_gpt_sovits.text.symbols import phones_to_ids, replace_unknown

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "upstream_text_yue.json").read_text(encoding="utf-8"))
CASES = FIXTURE["cases"]
SPOKEN = [c for c in CASES if "error" not in c]
FAILING = [c for c in CASES if "error" in c]


@pytest.fixture(autouse=True)
def _fresh_import_cache():
    cantonese._tojyutping.cache_clear()
    yield
    cantonese._tojyutping.cache_clear()


def test_fixture_is_upstreams():
    source = FIXTURE["source"]
    assert source["repo"] == "RVC-Boss/GPT-SoVITS"
    assert source["commit"].startswith("48b1a01")
    assert len(SPOKEN) >= 30


def test_same_library_versions_as_the_recording():
    from importlib.metadata import version

    pytest.importorskip("ToJyutping")
    for name, recorded in FIXTURE["source"]["libraries"].items():
        assert version(name) == recorded, f"{name} differs from the fixture's; re-record it"


@pytest.mark.parametrize("case", SPOKEN, ids=[c["text"] for c in SPOKEN])
def test_g2p_matches_upstream(case):
    pytest.importorskip("ToJyutping")
    norm = case["norm_text"]
    phones, word2ph = cantonese.g2p(norm, "v2")
    assert phones == case["g2p_phones"]
    assert word2ph == case["word2ph"]
    assert len(word2ph) == len(norm) and sum(word2ph) == len(phones)
    cleaned = replace_unknown(phones, "v2")
    assert cleaned == case["phones"]
    assert phones_to_ids(cleaned, "v2") == case["ids"]


@pytest.mark.parametrize("case", SPOKEN, ids=[c["text"] for c in SPOKEN])
def test_text_to_ids_matches_upstream(case):
    pytest.importorskip("ToJyutping")
    norm = cantonese.normalize(case["text"])
    assert norm == case["norm_text"]
    phones, word2ph = cantonese.g2p(norm, "v2")
    assert (phones, word2ph) == (case["g2p_phones"], case["word2ph"])
    assert phones_to_ids(replace_unknown(phones, "v2"), "v2") == case["ids"]


@pytest.mark.parametrize("case", FAILING, ids=[c["text"] for c in FAILING])
def test_upstream_failures_are_frontend_errors(case):
    pytest.importorskip("ToJyutping")
    with pytest.raises(FrontendError, match="no Jyutping reading"):
        cantonese.g2p(cantonese.normalize(case["text"]), "v2")


def test_unknown_syllable_maps_to_unk():
    pytest.importorskip("ToJyutping")
    phones, word2ph = cantonese.g2p("卅", "v2")
    assert phones == ["Ys", "Yaa1 aa6"] and word2ph == [2]
    assert replace_unknown(phones, "v2") == ["Ys", "UNK"]


def test_latin_letters_are_dropped():
    assert cantonese.normalize("OK啦，iPhone！") == "啦,!"


def test_later_versions_use_v2_phones():
    pytest.importorskip("ToJyutping")
    assert cantonese.g2p("佢", "v4") == cantonese.g2p("佢", "v2") == (["Yk", "Yeoi5"], [2])


def test_v1_has_no_cantonese():
    with pytest.raises(FrontendError, match="v2 or later"):
        cantonese.g2p("佢", "v1")


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ToJyutping", None)  # makes `import ToJyutping` fail
    with pytest.raises(MissingLanguagePackage) as info:
        cantonese.g2p("佢", "v2")
    message = str(info.value)
    assert message == "Cantonese text needs the 'yue' extra: pip install -e '.[yue]'"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(MissingLanguagePackage):
        cantonese.require()


def test_normalize_needs_no_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ToJyutping", None)
    assert cantonese.normalize("佢今年18歲。") == "佢今年十八岁."
