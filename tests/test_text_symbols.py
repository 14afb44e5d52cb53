"""Symbol tables: rebuilt exactly as upstream (ids are baked into checkpoints)."""

import json

import pytest
from conftest import FIXTURES  # noqa: E402

from dora_gpt_sovits.text.symbols import UNK, phones_to_ids, replace_unknown, symbols_v1, symbols_v2


def _fixture_list(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return json.loads(path.read_text(encoding="utf-8"))


def test_v1_table_matches_upstream():
    assert list(symbols_v1()) == _fixture_list("symbols_v1.json")
    assert len(symbols_v1()) == 322


def test_v2_table_matches_upstream():
    assert list(symbols_v2()) == _fixture_list("symbols_v2.json")
    assert len(symbols_v2()) == 732
    assert symbols_v2()[:322] == symbols_v1()


def test_known_ids():
    ids = {s: i for i, s in enumerate(symbols_v1())}
    assert (ids["!"], ids[","], ids["SP"], ids["SP2"], ids["UNK"], ids["_"], ids["…"]) == (0, 1, 77, 78, 86, 95, 321)
    assert symbols_v2()[351] == "停" and symbols_v2()[352] == "空"


def test_onnx_export_phone_list():
    # The phone list upstream's ONNX export uses as its example input.
    phones = "n i2 h ao3 , w o3 sh i4 b ai2 y e4".split()
    table = _fixture_list("symbols_v2.json")
    assert phones_to_ids(phones, "v2") == [table.index(p) for p in phones]
    assert phones_to_ids(phones, "v2")[:5] == [227, 167, 158, 119, 1]


def test_unknown_phones_become_unk():
    assert replace_unknown(["a1", "not-a-phone", "["], "v1") == ["a1", UNK, UNK]
    assert replace_unknown(["["], "v2") == ["["]
    unk = symbols_v2().index(UNK)
    assert phones_to_ids(["???"], "v2") == [unk]


def test_later_versions_use_the_v2_table():
    for version in ("v2", "v2Pro", "v2ProPlus", "v3", "v4"):
        assert phones_to_ids(["Ya1"], version) == [symbols_v2().index("Ya1")]
