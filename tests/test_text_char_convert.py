"""Traditional→simplified conversion equals upstream GPT-SoVITS' zh_normalization/char_convert.py
(48b1a01), not OpenCC's table; the data lives in dora_gpt_sovits.text.traditional_to_simplified."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from dora_gpt_sovits.text import chinese_normalize, traditional_to_simplified
from dora_gpt_sovits.text.chinese_normalize import normalize_sentence, to_simplified

# sha256 (UTF-8) of upstream's `simplified_charcters` and `traditional_characters` strings in
# GPT_SoVITS/text/zh_normalization/char_convert.py at 48b1a0169a28582a8984402f82cf438d3bfa6aca.
UPSTREAM_SIMPLIFIED_SHA256 = "9cf91117f1b08237a16f9f2369af55addb68119d5837d640ebc6d84dce17253c"
UPSTREAM_TRADITIONAL_SHA256 = "cac7ea53d2cb82179a4d6b835803e4d7c25c9528695db43e1454ef50daa3df50"
UPSTREAM_LENGTH = 10737
UPSTREAM_CHANGED = 2706  # traditional characters whose (last) pair is not the character itself


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_strings_equal_upstreams():
    assert len(traditional_to_simplified.SIMPLIFIED) == UPSTREAM_LENGTH
    assert len(traditional_to_simplified.TRADITIONAL) == UPSTREAM_LENGTH
    assert _sha256(traditional_to_simplified.SIMPLIFIED) == UPSTREAM_SIMPLIFIED_SHA256
    assert _sha256(traditional_to_simplified.TRADITIONAL) == UPSTREAM_TRADITIONAL_SHA256
    assert len(traditional_to_simplified.table()) == UPSTREAM_CHANGED


@pytest.mark.parametrize(
    ("traditional", "simplified"),
    [
        ("乾", "乾"),  # listed twice upstream (→干, then →乾): the later pair wins
        ("於", "於"),  # likewise (→于, then →於)
        ("閒", "閒"),
        ("糉", "糉"),  # not in upstream's table at all
        ("麼", "麽"),  # not 么 (OpenCC's), which reads differently
        ("這", "这"),
        ("個", "个"),
        ("發", "发"),
        ("髮", "发"),
        ("a", "a"),
        ("１", "１"),  # full-width digits stay; the full-width fold comes after
    ],
)
def test_named_characters(traditional, simplified):
    assert to_simplified(traditional) == simplified
    assert chinese_normalize.traditional_to_simplified_table().get(ord(traditional), traditional) == simplified


def test_later_pair_overrides_earlier():
    pairs = list(zip(traditional_to_simplified.TRADITIONAL, traditional_to_simplified.SIMPLIFIED))
    last = dict(pairs)
    for traditional, simplified in last.items():
        assert to_simplified(traditional) == simplified
    assert sum(1 for n in Counter(traditional_to_simplified.TRADITIONAL).values() if n > 1) == 34


def test_applied_first_in_normalize_sentence():
    # conversion before the number rules and the full-width fold, as upstream's normalize_sentence
    assert normalize_sentence("這個乾淨嗎") == "这个乾净吗"
    assert normalize_sentence("什麼１２個") == "什麽十二个"
