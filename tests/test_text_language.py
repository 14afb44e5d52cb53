"""Language runs, the public frontend API and its errors."""

import pytest

from dora_gpt_sovits.text.errors import FrontendError
from dora_gpt_sovits.text.frontend import PhoneSegment, clean_text, joined_phone_ids, text_to_phones
from dora_gpt_sovits.text.language import UnsupportedLanguageError, split_languages


def _runs(text, language):
    return [(r.language, r.text) for r in split_languages(text, language)]


def test_mixed_chinese_english_runs():
    assert _runs("我用iPhone 15拍了3张照片，Very nice！", "zh") == [
        ("zh", "我用"),
        ("en", "iPhone 15"),
        ("zh", "拍了3张照片，"),
        ("en", "Very nice!"),
    ]
    assert _runs("The price is 100元", "zh") == [("en", "The price is 100"), ("zh", "元")]


def test_all_zh_sends_digits_to_chinese_and_en_keeps_everything_english():
    assert _runs("version 2更新", "all_zh") == [("en", "version "), ("zh", "2更新")]
    assert _runs("你好 world", "en") == [("en", "你好 world")]


def test_auto_detects_script():
    assert _runs("今天是2024年。100 people came.", "auto") == [("zh", "今天是2024年。"), ("en", "100 people came.")]


@pytest.mark.parametrize("language", ["ja", "ko", "yue", "all_ja", "auto_yue"])
def test_unsupported_languages_are_named(language):
    with pytest.raises(UnsupportedLanguageError, match="supported: zh, all_zh, en, auto"):
        text_to_phones("你好", language)


def test_unknown_language_code():
    with pytest.raises(FrontendError, match="unknown language code 'fr'"):
        text_to_phones("bonjour", "fr")


def test_auto_rejects_kana_and_hangul():
    with pytest.raises(UnsupportedLanguageError, match="Japanese"):
        text_to_phones("こんにちは世界", "auto")
    with pytest.raises(UnsupportedLanguageError, match="Korean"):
        text_to_phones("안녕하세요", "auto")


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "，。！", "...", "——"])
def test_empty_or_punctuation_only_text(text):
    with pytest.raises(FrontendError):
        text_to_phones(text, "zh")


def test_non_string_text():
    with pytest.raises(FrontendError):
        text_to_phones(None, "zh")


def test_text_to_phones_mixed():
    segments = text_to_phones("我喜欢Python编程。", "zh", "v2")
    assert [s.language for s in segments] == ["zh", "en", "zh"]
    assert all(isinstance(s, PhoneSegment) for s in segments)
    zh = segments[0]
    assert len(zh.word2ph) == len(zh.norm_text) and sum(zh.word2ph) == len(zh.phones)
    assert segments[1].word2ph is None and segments[1].phones[:2] == ["P", "AY1"]
    assert len(joined_phone_ids(segments)) == sum(len(s) for s in segments)


def test_short_text_gets_a_leading_period():
    segments = text_to_phones("好", "zh")
    assert segments[0].norm_text == ".好" and segments[0].phones[0] == "."


def test_clean_text_returns_upstream_tuple():
    phones, word2ph, norm_text = clean_text("Hi", "en")
    assert phones[0] == "," and word2ph is None  # < 4 phones: leading pause
    assert clean_text("你好", "all_zh").norm_text == "你好"
    with pytest.raises(FrontendError):
        clean_text("你好", "ko")
