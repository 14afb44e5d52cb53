"""Language runs, the public frontend API and its errors."""

import pytest

from dora_gpt_sovits.text.errors import FrontendError
from dora_gpt_sovits.text.frontend import PhoneSegment, clean_text, joined_phone_ids, text_to_phones
from dora_gpt_sovits.text.language import (
    SUPPORTED_LANGUAGES,
    UnsupportedLanguageError,
    check_language,
    split_languages,
)


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


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_upstream_language_code_is_accepted(language):
    assert check_language(language) == language


def test_unknown_language_code():
    with pytest.raises(FrontendError, match="unknown language code 'fr'"):
        text_to_phones("bonjour", "fr")
    with pytest.raises(UnsupportedLanguageError, match="supported: auto, auto_yue, zh, en, ja, ko, yue, all_zh"):
        split_languages("x", "jp")


def test_auto_splits_by_script():
    assert _runs("你好。こんにちは、世界。안녕하세요! Hello.", "auto") == [
        ("zh", "你好。"),
        ("ja", "こんにちは、世界。"),
        ("ko", "안녕하세요! "),
        ("en", "Hello."),
    ]
    # Han is Japanese in a sentence with kana (before or after it), Chinese in one without.
    assert _runs("最近、僕は元気です。今天很好。", "auto") == [("ja", "最近、僕は元気です。"), ("zh", "今天很好。")]
    assert _runs("ｶﾀｶﾅ", "auto") == [("ja", "ｶﾀｶﾅ")]


def test_auto_yue_reads_chinese_as_cantonese():
    assert _runs("我好钟意。こんにちは。Hi.", "auto_yue") == [
        ("yue", "我好钟意。"),
        ("ja", "こんにちは。"),
        ("en", "Hi."),
    ]


@pytest.mark.parametrize("language", ["ja", "ko", "yue", "zh"])
def test_a_named_language_takes_everything_but_latin(language):
    assert _runs("東京タワー、서울 and 北京3号", language) == [
        (language, "東京タワー、서울 "),
        ("en", "and "),
        (language, "北京3号"),
    ]
    assert _runs("version 2です", "all_" + language) == [("en", "version "), (language, "2です")]


def test_a_language_module_that_does_not_exist_is_not_supported(monkeypatch):
    import dora_gpt_sovits.text.languages as languages

    monkeypatch.setitem(languages.LANGUAGES, "ko", languages.LanguageInfo("ko", "Korean", "no_such_module", "ko", ()))
    with pytest.raises(FrontendError, match=r"^Korean \('ko'\) is not supported by this version yet$"):
        text_to_phones("안녕하세요 여러분", "ko")


def test_v1_has_no_korean_or_cantonese():
    with pytest.raises(FrontendError, match="needs a v2 or later model"):
        text_to_phones("안녕하세요 여러분", "ko", "v1")


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
    with pytest.raises(FrontendError, match="single language"):
        clean_text("你好", "auto")
