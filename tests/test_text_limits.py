"""Text larger than a model's window, and numbers larger than their readings (issue #15, classes 2
and 3): every segment fits BERT's 512 positions and the GPT's phone budget, cut at the best
boundary there is; normal text is segmented exactly as upstream; long numbers are read digit by
digit; and an unpunctuated text is spoken and reported complete."""

from __future__ import annotations

import re

import pytest
import torch
from test_reliability import Graph, assert_spoken

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.text.chinese_normalize import normalize_chinese
from dora_gpt_sovits.text.chinese_numbers import MAX_CARDINAL_DIGITS, read_cardinal
from dora_gpt_sovits.text.english_normalize import MAX_SPELLED_DIGITS, normalize_english
from dora_gpt_sovits.text.frontend import text_to_phones
from dora_gpt_sovits.text.segment_limits import MAX_BERT_CHARS, MAX_SEGMENT_PHONES, segment_text
from dora_gpt_sovits.text.sentence_split import StreamingSplitter, prepare_sentences

ZH = "今天天气很好我们去公园散步吧小明说他明天要去北京参加一个很重要的会议"


def assert_within_limits(segments) -> None:
    for s in segments:
        assert s.error is None, s.error
        assert 0 < s.n_phones <= MAX_SEGMENT_PHONES, (s.n_phones, s.text[:40])
        assert all(len(r.norm_text) <= MAX_BERT_CHARS for r in s.runs if r.language == "zh")


def unended(text: str) -> str:
    return text[:-1] if text[-1] in "。." else text


# ---- the whole path, with a BERT stand-in that has the real model's 512 positions -------------------
def bert_with_512_positions(text: str, word2ph: list[int]) -> torch.Tensor:
    if len(text) + 2 > 512:  # what chinese-roberta does: an index error in its position embedding
        raise IndexError(f"index out of range in self: {len(text) + 2} positions")
    return torch.zeros(m.FEATURE_DIM, sum(word2ph))


@pytest.mark.parametrize(
    "text",
    [
        (ZH * 20)[:600],  # the case: crashed bert, then reported failed
        " ".join(["the quick brown fox jumps over a lazy dog"] * 15),  # 600+ characters of English
    ],
)
def test_an_unpunctuated_600_character_text_is_spoken_and_reported_complete(tmp_path, text):
    graph = Graph(tmp_path)
    graph.stages["bert"] = BertStage(bert_with_512_positions)
    report = graph.say(text)
    assert report is not None
    assert_spoken(report)
    assert graph.segments_sent >= 2


# ---- segmentation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, language",
    [
        ("今天天气很好，我们去公园散步吧。小明说他明天要去北京，参加一个很重要的会议！", "zh"),
        ("我用iPhone拍了3张照片，花了12.5元。", "zh"),
        ("Hello there, this is a test. It has two sentences!", "en"),
        ("今天是 Monday，我们 meet at 3 点。", "auto"),
    ],
)
def test_normal_text_is_segmented_exactly_as_upstream(text, language):
    segments = list(segment_text(text, language))
    assert [s.text for s in segments] == prepare_sentences(text, language, "cut5")
    for s in segments:
        assert [(r.phones, r.norm_text) for r in s.runs] == [
            (r.phones, r.norm_text) for r in text_to_phones(s.text, language)
        ]
    assert [s.final for s in segments] == [False] * (len(segments) - 1) + [True]


def test_a_long_unpunctuated_text_is_cut_between_words_within_the_limits():
    word = "中华人民共和国"  # one jieba word: a cut must never land inside it
    text = word * 300
    segments = list(segment_text(text, "zh"))
    assert_within_limits(segments)
    parts = [unended(s.text) for s in segments]
    assert "".join(parts).lstrip("。") == text
    assert all(len(p.lstrip("。")) % len(word) == 0 for p in parts)


def test_cuts_keep_numbers_and_latin_words_whole():
    text = "编号12345678和" * 120 + "".join(f"word{i} " for i in range(200))
    segments = list(segment_text(text, "zh"))
    assert_within_limits(segments)
    for s in segments:
        body = unended(s.text).lstrip("。")
        assert all(len(d) == 8 for d in re.findall(r"\d+", body if "word" not in body else ""))
        for token in re.findall(r"word\d+", body):
            assert re.fullmatch(r"word\d{1,3}", token) and int(token[4:]) < 200
    assert "".join(unended(s.text) for s in segments).lstrip("。") == text


def test_a_long_punctuated_piece_over_the_phone_budget_is_cut_at_its_punctuation():
    # cut0 keeps the whole text as one piece (upstream would decode ~900 phones: past its 60 s cap)
    text = "今天天气很好，我们去公园散步吧，小明说他明天要去北京，参加一个很重要的会议。" * 12
    segments = list(segment_text(text, "zh", method="cut0"))
    assert len(segments) > 1
    assert_within_limits(segments)
    assert all(s.text[-1] in "，。" for s in segments)  # cut after the text's own marks
    assert "".join(s.text for s in segments) == text


@pytest.mark.slow
def test_a_100k_character_text_is_within_the_limits_and_keeps_every_character():
    text = (ZH * 3000)[:100_000]
    segments = list(segment_text(text, "zh"))
    assert_within_limits(segments)
    assert "".join(unended(s.text) for s in segments) == text
    assert [s.final for s in segments].count(True) == 1 and segments[-1].final


def test_no_segment_is_only_the_closing_mark_or_empty():
    # upstream's split_big_text makes "" and a lone "。" of an unpunctuated text over 510 characters
    for text in [ZH * 20, "a" * 1500, "1" * 2000]:
        pieces = prepare_sentences(text, "zh", "cut5")
        assert all(len(p) <= MAX_BERT_CHARS and any(c.isalnum() for c in p) for p in pieces)


# ---- numbers --------------------------------------------------------------------------------------
def test_chinese_quantities_beyond_16_digits_are_read_digit_by_digit():
    assert (
        read_cardinal("9" * MAX_CARDINAL_DIGITS)
        == "九千九百九十九万" + "九千九百九十九亿" + "九千九百九十九万九千九百九十九"
    )
    assert read_cardinal("1" + "0" * MAX_CARDINAL_DIGITS) == "一" + "零" * MAX_CARDINAL_DIGITS
    assert normalize_chinese("1" * 9000 + "个") == "一" * 9000 + "个"  # was a RecursionError


def test_english_numbers_beyond_inflect_are_read_digit_by_digit():
    assert normalize_english("9" * MAX_SPELLED_DIGITS).startswith("nine hundred ninety-nine decillion")
    assert (
        normalize_english("1" + "0" * MAX_SPELLED_DIGITS) == "one" + " zero" * MAX_SPELLED_DIGITS
    )  # was an inflect error
    assert normalize_english("the " + "1" * 40 + "th") == "the " + "one " * 39 + "first"
    assert normalize_english("2/" + "3" * 40) == "two " + "three " * 39 + "thirds"
    assert normalize_english("$" + "5" * 5000).startswith("five five")  # int() of >4300 digits raised


# ---- streaming --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [ZH * 40, "12345678" * 100, "word " * 400])
def test_the_stream_splitter_cuts_unpunctuated_text_within_max_chars(text):
    splitter = StreamingSplitter(max_chars=80)
    out = []
    for i in range(0, len(text), 7):
        out += splitter.push(text[i : i + 7])
        assert len(splitter.buffer) <= 80 + 7
    out += splitter.flush()
    assert all(len(s) <= 80 for s in out) and len(out) > 1
    assert "".join(out).replace(" ", "") == text.replace(" ", "")
