"""Japanese frontend and the automatic language split against upstream's own output.

Fixtures recorded by scripts/record_upstream_text.py from GPT-SoVITS at 48b1a01 (see its notes).
"""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyopenjtalk", reason="needs the 'ja' extra")

from dora_gpt_sovits.text import japanese  # noqa: E402
from dora_gpt_sovits.text.errors import FrontendError, MissingLanguagePackage  # noqa: E402
from dora_gpt_sovits.text.frontend import clean_text, text_to_phones  # noqa: E402
from dora_gpt_sovits.text.language import split_languages  # noqa: E402
from dora_gpt_sovits.text.symbols import phones_to_ids  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
JA = json.loads((FIXTURES / "upstream_text_ja.json").read_text(encoding="utf-8"))
AUTO = json.loads((FIXTURES / "upstream_text_auto.json").read_text(encoding="utf-8"))


def _id(case):
    return f"{case['version']}-{case['language']}-{case['text'][:14]}"


@pytest.mark.parametrize("case", JA["cases"], ids=_id)
def test_clean_text_matches_upstream(case):
    phones, word2ph, norm_text = clean_text(case["text"], case["language"], case["version"])
    assert norm_text == case["norm_text"]
    assert phones == case["phones"]
    assert word2ph == case["word2ph"]
    assert phones_to_ids(phones, case["version"]) == case["phone_ids"]


@pytest.mark.parametrize("case", AUTO["cases"], ids=_id)
def test_language_split_matches_upstream(case):
    runs = split_languages(case["text"], case["language"])
    assert [(r.language, r.text) for r in runs] == [(r["language"], r["text"]) for r in case["runs"]]
    segments = text_to_phones(case["text"], case["language"], case["version"])
    assert [s.language for s in segments] == [r["language"] for r in case["runs"]]
    for segment, run in zip(segments, case["runs"]):
        assert (segment.language == "zh") == run["bert"]  # only Chinese runs get BERT features
        if run["phones"] is not None:
            assert segment.norm_text == run["norm_text"]
            assert segment.phones == run["phones"]
            assert segment.phone_ids == run["phone_ids"]


def test_fixtures_cover_the_issue():
    assert len([c for c in JA["cases"] if c["version"] == "v2"]) >= 30
    assert len(AUTO["cases"]) >= 20
    assert {c["version"] for c in JA["cases"]} == {"v1", "v2"}


def test_prosody_marks_and_pauses():
    phones, _ = japanese.g2p(japanese.normalize("東京タワーに行きましょう！"))
    assert phones[-1] == "!" and "[" in phones and "]" in phones
    assert japanese.normalize("えっ!!!本当...?") == "えっ!本当."


def test_missing_openjtalk_is_one_line(monkeypatch):
    japanese._openjtalk.cache_clear()
    monkeypatch.setitem(sys.modules, "pyopenjtalk", None)
    try:
        with pytest.raises(MissingLanguagePackage) as caught:
            text_to_phones("こんにちは、世界。", "ja")
        message = str(caught.value)
        assert "\n" not in message and "'ja' extra" in message and "pip install -e '.[ja]'" in message
        assert isinstance(caught.value, FrontendError)
    finally:
        japanese._openjtalk.cache_clear()


def test_user_dictionary_is_compiled_once_and_used(tmp_path):
    import pyopenjtalk

    csv = tmp_path / "userdict.csv"
    # Upstream's own example entry format (MeCab CSV): surface, ids, cost, POS..., reading, accent.
    csv.write_text(
        "主殿,*,*,-32767,名詞,固有名詞,一般,*,*,*,アルジドノ,アルジドノ,アルジドノ,3/5,*\n", encoding="utf-8"
    )
    assert japanese.g2p("主殿")[0] == ["sh", "u", "]", "d", "e", "N"]
    try:
        compiled = japanese.use_user_dictionary(csv, tmp_path / "out")
        stamp = compiled.stat().st_mtime_ns
        assert japanese.use_user_dictionary(csv, tmp_path / "out").stat().st_mtime_ns == stamp  # md5 unchanged
        assert japanese.g2p("主殿")[0] == ["a", "[", "r", "u", "j", "i", "]", "d", "o", "n", "o"]
    finally:
        pyopenjtalk.unset_user_dict()


@pytest.mark.parametrize("case", AUTO["cuts"], ids=lambda c: f"{c['method']}-{c['text'][:8]}")
def test_cut_methods_match_upstream_on_japanese_and_korean(case):
    from dora_gpt_sovits.text.sentence_split import get_method

    assert get_method(case["method"])(case["text"]) == case["result"]


def test_streaming_splitter_cuts_japanese_and_korean_sentences():
    from dora_gpt_sovits.text.sentence_split import StreamingSplitter

    splitter = StreamingSplitter()
    text = "「こんにちは」と彼は言った。今日はいい天気ですね！散歩に行きませんか？안녕하세요. 반갑습니다! 終わり…"
    out = [s for ch in text for s in splitter.push(ch)] + splitter.flush()
    assert out == [
        "「こんにちは」と彼は言った。",
        "今日はいい天気ですね！",
        "散歩に行きませんか？",
        "안녕하세요.",
        "반갑습니다!",
        "終わり…",
    ]
