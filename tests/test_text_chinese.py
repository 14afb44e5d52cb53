"""Chinese normalisation, pinyin → phones, tone sandhi and erhua."""

import pytest

from dora_gpt_sovits.text import chinese
from dora_gpt_sovits.text.chinese_normalize import normalize_chinese
from dora_gpt_sovits.text.chinese_numbers import read_cardinal, read_digits, read_number
from dora_gpt_sovits.text.erhua import apply_erhua
from dora_gpt_sovits.text.frontend import clean_text
from dora_gpt_sovits.text.pinyin_phones import pinyin_to_phones, split_syllable
from dora_gpt_sovits.text.tone_sandhi import apply_tone_sandhi, merge_for_sandhi


@pytest.mark.parametrize(
    "digits, spoken",
    [
        ("0", "零"),
        ("10", "十"),
        ("15", "十五"),
        ("105", "一百零五"),
        ("1050", "一千零五十"),
        ("10000", "一万"),
        ("100000000", "一亿"),
        ("120003", "十二万零三"),
    ],
)
def test_read_cardinal(digits, spoken):
    assert read_cardinal(digits) == spoken


def test_read_number_and_digits():
    assert read_number("3.5") == "三点五"
    assert read_number(".25") == "零点二五"
    assert read_number("3.50") == "三点五零"  # upstream keeps one trailing zero
    assert read_digits("2024") == "二零二四"
    assert read_digits("110", yao_for_one=True) == "幺幺零"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("他有3个孩子", "他有三个孩子"),
        ("他花了1500元买了2台电脑", "他花了一千五百元买了两台电脑"),
        ("体重从60kg降到55.5kg", "体重从六十千克降到五十五点五千克"),
        ("增长了-15%", "增长了负百分之十五"),
        ("我有1/3的把握", "我有三分之一的把握"),
        ("客服电话是13912345678", "客服电话是幺三九幺二三四五六七八"),
        # QUIRKS kept from upstream: "-" between digits is read as minus before phone rules run,
        # and 半 for a range end is decided by the start minute.
        ("客服电话是400-123-4567", "客服电话是四零零减幺二三减四五六七"),
        ("时间范围是08:00-09:30之间", "时间范围是八点至九点三十分之间"),
        ("在2019.10.01那天", "在二零一九年十月一日那天"),
        ("这是第1.2.3版", "这是第一点二点三版"),
        ("120次列车", "幺二零次列车"),
        ("价格在100~200元之间", "价格在一百到二百元之间"),
        ("2+3=5", "二加三等于五"),
        ("x²", "的二次方"),
        ("零下-10°C", "零下零下十度"),
        ("電話號碼", "电话号码"),
        ("ＡＢＣ１２３", "幺二三"),
        ("你好！！！真的？？", "你好!真的?"),
        ("嗯，好吧~", "恩,好吧…"),
        ("《三体》是一本书——很好看", "三体是一本书很好看"),
    ],
)
def test_normalize(text, expected):
    assert normalize_chinese(text) == expected


@pytest.mark.parametrize(
    "syllable, split",
    [
        ("zhi", ("zh", "ir")),
        ("zi", ("z", "i0")),
        ("ri", ("r", "ir")),
        ("yan", ("y", "En")),
        ("ye", ("y", "E")),
        ("yu", ("y", "v")),
        ("juan", ("j", "van")),
        ("xue", ("x", "ve")),
        ("wu", ("w", "u")),
        ("wei", ("w", "ei")),
        ("e", ("EE", "e")),
        ("er", ("EE", "er")),
        ("ou", ("OO", "ou")),
        ("ang", ("AA", "ang")),
        ("lve", ("l", "ve")),
        ("dui", ("d", "ui")),
    ],
)
def test_split_syllable(syllable, split):
    assert split_syllable(syllable) == split


def test_pinyin_to_phones_from_strict_pypinyin_parts():
    assert pinyin_to_phones("", "iou3") == ["y", "ou3"]
    assert pinyin_to_phones("d", "uei4") == ["d", "ui4"]
    assert pinyin_to_phones("", "van2") == ["y", "van2"]
    assert pinyin_to_phones("", "ng2") is None  # bare nasal interjection


def _finals(word, pos, finals):
    return apply_tone_sandhi(word, pos, finals.split())


def test_bu_and_yi_sandhi():
    assert _finals("不怕", "v", "u4 a4") == ["u2", "a4"]
    assert _finals("看不懂", "v", "an4 u4 ong3") == ["an4", "u5", "ong3"]
    assert _finals("一段", "m", "i1 uan4") == ["i2", "uan4"]
    assert _finals("一天", "m", "i1 ian1") == ["i4", "ian1"]
    assert _finals("看一看", "v", "an4 i1 an4") == ["an4", "i5", "an4"]
    assert _finals("第一", "m", "i4 i1") == ["i4", "i1"]
    assert _finals("一零一", "m", "i1 ing2 i1") == ["i1", "ing2", "i1"]


def test_neutral_and_third_tone_sandhi():
    assert _finals("奶奶", "n", "ai3 ai3") == ["ai3", "ai5"]
    assert _finals("东西", "n", "ong1 i1") == ["ong1", "i5"]
    assert _finals("我们", "r", "o3 en2") == ["o3", "en5"]
    assert _finals("男子", "n", "an2 i3") == ["an2", "i3"]
    assert _finals("你好", "l", "i3 ao3") == ["i2", "ao3"]


def test_merge_for_sandhi():
    assert merge_for_sandhi([("听", "v"), ("一", "m"), ("听", "v")]) == [("听一听", "v")]
    assert merge_for_sandhi([("不", "d"), ("好", "a")]) == [("不好", "a")]
    assert merge_for_sandhi([("花", "n"), ("儿", "n")]) == [("花儿", "n")]


def test_erhua_takes_the_tone_of_the_coloured_syllable():
    assert apply_erhua(["h", "t", ""], ["u2", "ong5", "er2"], "胡同儿", "n")[1] == ["u2", "ong5", "er5"]
    assert apply_erhua(["n", ""], ["v3", "er2"], "女儿", "n")[1] == ["v3", "er2"]


def test_v1_has_no_erhua_but_v2_has():
    v2 = clean_text("胡同儿", "zh", "v2").phones
    v1 = clean_text("胡同儿", "zh", "v1").phones
    assert v2[-1] == "er5" and v1[-1] == "er2"


def test_word2ph_covers_every_character():
    norm = chinese.text_normalize("今天下雨了，我们不去公园……好吗？")
    result = chinese.g2p(norm)
    assert len(result.word2ph) == len(norm)
    assert sum(result.word2ph) == len(result.phones)
    assert all(n == (1 if c in ",.!?…-" else 2) for c, n in zip(norm, result.word2ph))


def test_pause_markers_turn_commas_into_silences():
    phones, _, norm = clean_text("你好，世界^再见", "zh")
    assert "SP3" in phones and "," not in phones
    assert norm == "你好,世界,再见"


def test_latin_letters_are_dropped_by_the_chinese_frontend():
    phones, word2ph, norm = clean_text("我用GPT生成", "zh")
    assert norm == "我用生成" and len(word2ph) == 4
