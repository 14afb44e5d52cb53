"""Upstream's cut0..cut5, sentence preparation, and the streaming splitter."""

import pytest

from dora_gpt_sovits.text.sentence_split import (
    StreamingSplitter,
    cut0,
    cut1,
    cut2,
    cut3,
    cut4,
    cut5,
    get_method,
    merge_short_pieces,
    prepare_sentences,
    split_after_marks,
    split_big_text,
)

FOUR = "你好，我是小明。你好，我是小红。你好，我是小刚。你好，我是小张。"


def test_split_after_marks():
    assert split_after_marks("一……二——三") == ["一。", "二，", "三。"]


def test_cut_methods():
    assert cut0("你好。再见") == "你好。再见" and cut0("..., ") == "\n"
    assert cut1(FOUR) == FOUR  # 8 clauses: bounds [0, None] keep them together (upstream)
    assert cut1("一。二。三。四。五。六。七。八。九。").split("\n") == ["一。二。三。四。", "五。六。七。八。九。"]
    assert cut1("一。二。三。") == "一。二。三。"
    assert cut2("短句。" * 3) == "短句。短句。短句。"
    assert cut2("这是一个比较长的句子，" * 8).count("\n") == 0  # short tail joins the previous piece
    assert cut3("第一句。第二句。") == "第一句\n第二句"
    assert cut4("Pi is 3.14. Next one. Last") == "Pi is 3.14. Next one\n Last"  # '.' after a digit stays
    assert cut5("价格是3.5元，很便宜！对吗？") == "价格是3.5元，\n很便宜！\n对吗？"


def test_cut1_last_group_joins_previous():
    # upstream slices [0:4], [4:None]: nine sentences give pieces of 4 and 5
    text = "".join(f"句{i}。" for i in range(9))
    assert [p.count("。") for p in cut1(text).split("\n")] == [4, 5]


def test_get_method_rejects_unknown():
    with pytest.raises(ValueError, match="cut6"):
        get_method("cut6")


def test_merge_short_pieces():
    assert merge_short_pieces(["a", "bb", "cccccc", "d"], 5) == ["abbccccccd"]
    assert merge_short_pieces(["abcde", "fg", "hijkl"], 5) == ["abcde", "fghijkl"]
    assert merge_short_pieces(["abcdef", "g"], 5) == ["abcdefg"]
    assert merge_short_pieces(["abc"], 5) == ["abc"]


def test_split_big_text_respects_limit():
    pieces = split_big_text("这是一句话，" * 200, 510)
    assert all(len(p) <= 510 for p in pieces) and "".join(pieces) == "这是一句话，" * 200


def test_prepare_sentences():
    # a short first clause gets a leading 。, which cut5 then drops; "你好。" is merged (< 5 chars)
    assert prepare_sentences("你好。我是一个语音合成系统！", "zh", "cut5") == ["你好。我是一个语音合成系统！"]
    assert prepare_sentences("好的", "zh", "cut0") == ["。好的。"]
    assert prepare_sentences("Hello there, how are you", "en", "cut0") == ["Hello there, how are you."]
    assert prepare_sentences("", "zh", "cut1") == []


def _stream(text, step=3, **kwargs):
    splitter = StreamingSplitter(**kwargs)
    out = []
    for i in range(0, len(text), step):
        out += splitter.push(text[i : i + step])
    return out, splitter.flush()


def test_streaming_releases_sentences_as_they_complete():
    splitter = StreamingSplitter()
    assert splitter.push("今天天气很好") == []
    assert splitter.push("。") == []  # the 。 might still be followed by another mark
    assert splitter.push("我们去公园吧") == ["今天天气很好。"]
    assert splitter.flush() == ["我们去公园吧"]
    assert splitter.flush() == []


def test_streaming_keeps_decimals_abbreviations_and_quotes():
    text = "温度是3.5度。Dr. Smith said hello. 他说：“好的。”然后走了"
    released, rest = _stream(text)
    assert released == ["温度是3.5度。", "Dr. Smith said hello.", "他说：“好的。”"]
    assert rest == ["然后走了"]


def test_streaming_merges_short_sentences_and_cuts_long_ones():
    released, rest = _stream("嗯。好的，我知道了。")
    assert released + rest == ["嗯。好的，我知道了。"]
    long_clause = "这是一个没有句号的很长的句子，" * 10
    released, rest = _stream(long_clause, max_chars=40)
    assert released and all(len(p) <= 40 for p in released)
    assert "".join(released + rest) == long_clause.strip()


def test_streaming_drops_punctuation_only_pieces():
    released, rest = _stream("……", step=1)
    assert released == [] and rest == []
