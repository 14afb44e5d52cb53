"""Chinese text normalisation: non-standard words (numbers, dates, times, phone numbers,
units, percentages, formulas) spelled out in characters, then punctuation reduced to the
six marks the phone set knows.

The rules and their order follow GPT-SoVITS' (PaddleSpeech-derived) normaliser so that the
normalised text, which fixes both the phones and the BERT input, matches upstream's.
Some of its odd behaviours are kept on purpose and marked QUIRK.
"""

from __future__ import annotations

import re
import string

from . import traditional_to_simplified
from .chinese_numbers import read_cardinal, read_clock_number, read_digits, read_number
from .symbols import CJK_MARK_PHONES, PUNCTUATION

# ---------------------------------------------------------------- character conversions

FULLWIDTH_TO_ASCII = {ord(c) + 0xFEE0: ord(c) for c in string.ascii_letters + string.digits}
FULLWIDTH_TO_ASCII[0x3000] = ord(" ")


def traditional_to_simplified_table() -> dict[int, str]:
    """Upstream's own character table (zh_normalization/char_convert.py, kept as data in
    traditional_to_simplified), not OpenCC's: the two disagree on over a thousand characters."""
    return traditional_to_simplified.table()


def to_simplified(text: str) -> str:
    # The first step of upstream's normalize_sentence, before the full-width fold.
    return traditional_to_simplified.to_simplified(text)


# ---------------------------------------------------------------- sentence splitting

# Brackets, quotes and symbols that are simply dropped (note: the em dash too).
DROPPED_BEFORE_SPLIT = re.compile(r"[—《》【】<>{}()（）#&@“”^_|\\]")
SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")


def split_sentences(text: str) -> list[str]:
    text = text.replace(" ", "")
    text = DROPPED_BEFORE_SPLIT.sub("", text)
    text = SENTENCE_END.sub(r"\1\n", text).strip()
    return [s.strip() for s in re.split(r"\n+", text)]


# Number rules that start with a run of digits have (?<!\d) before it: tried at every digit of a
# long run, each attempt would scan to the run's end (quadratic). A match starting inside a run
# implies one from the run's start, which comes first, and none of these ends inside a run, so
# what they match is unchanged (tests/test_text_scaling.py compares them with upstream's forms).
# RE_TILDE_RANGE keeps its form: its units m2/m3 end in a digit. Pieces reach the normaliser at
# most 510 characters long (sentence_split), which bounds what is left.

# ---------------------------------------------------------------- dates and times

RE_DATE = re.compile(r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
RE_DATE_NUMERIC = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_CLOCK = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
RE_TIME = re.compile(_CLOCK)
RE_TIME_RANGE = re.compile(_CLOCK + r"(~|-)" + _CLOCK)


def spell_date(m: re.Match) -> str:
    year, month, day, day_mark = m.group(1), m.group(3), m.group(5), m.group(9)
    out = read_digits(year) + "年"
    if month:
        out += read_cardinal(month) + "月"
    if day:
        out += read_cardinal(day) + day_mark
    return out


def spell_numeric_date(m: re.Match) -> str:
    return f"{read_digits(m.group(1))}年{read_cardinal(m.group(3))}月{read_cardinal(m.group(4))}日"


def _clock_reading(hour: str, minute: str, second: str | None, half_if: str) -> str:
    out = read_number(hour) + "点"
    if minute.lstrip("0"):
        out += "半" if int(half_if) == 30 else read_clock_number(minute) + "分"
    if second and second.lstrip("0"):
        out += read_clock_number(second) + "秒"
    return out


def spell_time(m: re.Match) -> str:
    out = _clock_reading(m.group(1), m.group(2), m.group(4), m.group(2))
    if m.re is RE_TIME_RANGE:
        # QUIRK: upstream decides 半 for the end time from the *start* minute.
        out += "至" + _clock_reading(m.group(6), m.group(7), m.group(9), m.group(2))
    return out


# ---------------------------------------------------------------- units, temperatures

_NUMBER = r"((-?)((\d+)(\.\d+)?)|(\.(\d+)))"
_RANGE_UNITS = r"(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
RE_TILDE_RANGE = re.compile(_NUMBER + _RANGE_UNITS + "~" + _NUMBER + _RANGE_UNITS)
RE_TEMPERATURE = re.compile(r"(-?)(?<!\d)(\d+(\.\d+)?)(°C|℃|度|摄氏度)")

# Order matters: longer spellings must be replaced before their prefixes.
UNIT_NAMES = (
    ("cm2", "平方厘米"),
    ("cm²", "平方厘米"),
    ("cm3", "立方厘米"),
    ("cm³", "立方厘米"),
    ("cm", "厘米"),
    ("db", "分贝"),
    ("ds", "毫秒"),
    ("kg", "千克"),
    ("km", "千米"),
    ("m2", "平方米"),
    ("m²", "平方米"),
    ("m³", "立方米"),
    ("m3", "立方米"),
    ("ml", "毫升"),
    ("m", "米"),
    ("mm", "毫米"),
    ("s", "秒"),
)


def spell_tilde_range(m: re.Match) -> str:
    return m.group(0).replace("~", "至")


def spell_temperature(m: re.Match) -> str:
    sign = "零下" if m.group(1) else ""
    unit = "摄氏度" if m.group(4) == "摄氏度" else "度"
    return sign + read_number(m.group(2)) + unit


def spell_units(sentence: str) -> str:
    # QUIRK: plain substring replacement, so Latin words lose their "s"/"m" letters; Latin
    # text only reaches here in all_zh mode (mixed mode sends it to the English frontend).
    for spelling, name in UNIT_NAMES:
        sentence = sentence.replace(spelling, name)
    return sentence


# ---------------------------------------------------------------- arithmetic

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)(?<!\d)((\d+)(\.\d+)?[{_SUPERSCRIPTS}]*)|(\.\d+[{_SUPERSCRIPTS}]*)|([A-Za-z][{_SUPERSCRIPTS}]*))"
RE_ARITHMETIC = re.compile(_OPERAND + r"([\+\-\×÷=])" + _OPERAND)
OPERATOR_WORDS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
RE_POWER = re.compile(f"[{_SUPERSCRIPTS}]+")
SUPERSCRIPT_TO_ASCII = str.maketrans(_SUPERSCRIPTS, "0123456789xyn")


def spell_operator(m: re.Match) -> str:
    return m.group(1) + OPERATOR_WORDS[m.group(8)] + m.group(9)


def spell_power(m: re.Match) -> str:
    return "的" + m.group(0).translate(SUPERSCRIPT_TO_ASCII) + "次方"


def spell_arithmetic(sentence: str) -> str:
    # Chains such as 1+2=3 need several passes since matches cannot overlap.
    while RE_ARITHMETIC.search(sentence):
        sentence = RE_ARITHMETIC.sub(spell_operator, sentence)
    return RE_POWER.sub(spell_power, sentence)


# ---------------------------------------------------------------- fractions, percentages

RE_FRACTION = re.compile(r"(-?)(?<!\d)(\d+)/(\d+)")
RE_PERCENTAGE = re.compile(r"(-?)(?<!\d)(\d+(\.\d+)?)%")


def spell_fraction(m: re.Match) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}{read_number(m.group(3))}分之{read_number(m.group(2))}"


def spell_percentage(m: re.Match) -> str:
    sign = "负" if m.group(1) else ""
    return f"{sign}百分之{read_number(m.group(2))}"


# ---------------------------------------------------------------- phone numbers

RE_MOBILE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
RE_LANDLINE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
RE_SERVICE_NUMBER = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")


def spell_mobile(m: re.Match) -> str:
    groups = m.group(0).strip("+").split()
    return "，".join(read_digits(g, yao_for_one=True) for g in groups)


def spell_landline(m: re.Match) -> str:
    return "，".join(read_digits(g, yao_for_one=True) for g in m.group(0).split("-"))


# ---------------------------------------------------------------- plain numbers

RE_NUMBER = re.compile(r"(-?)((\d+)(\.\d+)?)|(\.(\d+))")
RE_DECIMAL = re.compile(r"(-?)(?<!\d)((\d+)(\.\d+))|(\.(\d+))")
RE_NEGATIVE = re.compile(r"(-)(\d+)")
RE_VERSION = re.compile(r"(?<!\d)((\d+)(\.\d+)(\.\d+)?(\.\d+)+)")
RE_NUMBER_RANGE = re.compile(r"(?<![\d\+\-\×÷=])((-?)((\d+)(\.\d+)?))[-~]((-?)((\d+)(\.\d+)?))(?![\d\+\-\×÷=])")
RE_LONG_DIGITS = re.compile(r"\d{3}\d*")

# Measure words / units that mark a number as a quantity (一百二十三个); a bare number of
# three or more digits is read digit by digit as a code (房间号幺二零三). Only the start
# matters: the text after the number is left as it is.
SINGLE_MEASURE_WORDS = (
    "个位只条张本件块元角毛分钱两斤克吨米里尺寸丈亩升斗杯瓶碗盘桶箱袋盒罐壶锅篮台部辆架艘"
    "列趟回遍场届章节页篇首句段层栋座间家户所名人口头匹棵株朵片根支枝颗粒把双对副套"
    "组批群队堆串封项种类样门道幅面扇顶床岁年月日天周时刻秒世代季旬夜亿万千百毫厘"
    "平方处例尾网炮丘袭挑担壳曲墙腔客贯扎捆刀令打手罗坡山岭江溪钟单出脚板跳贴针线管"
    "身堂课丝忽寻常铺程撮勺合叠笼盆碟斛簋卮盏箩煲啖钵纪更春夏秋冬辈丸泡幢"
)
MULTI_MEASURE_WORDS = ("小时", "公分", "公斤", "公里", "美元", "微克", "微米")
RE_QUANTITY = re.compile(rf"(?<!\d)(\d+)([多余几\+])?(?=[{SINGLE_MEASURE_WORDS}]|{'|'.join(MULTI_MEASURE_WORDS)})")


def spell_range(m: re.Match) -> str:
    return f"{RE_NUMBER.sub(spell_number, m.group(1))}到{RE_NUMBER.sub(spell_number, m.group(6))}"


def spell_negative(m: re.Match) -> str:
    return "负" + read_number(m.group(2))


def spell_version(m: re.Match) -> str:
    return "".join("点" if c == "." else read_number(c) for c in m.group(1))


def spell_number(m: re.Match) -> str:
    if m.group(5):  # ".5": a bare fraction; its sign (if any) is not read, as upstream
        return read_number(m.group(5))
    return ("负" if m.group(1) else "") + read_number(m.group(2))


def spell_quantity(m: re.Match) -> str:
    number = read_number(m.group(1))
    number = "两" if number == "二" else number  # 两个, not 二个
    approx = {"+": "多", None: ""}.get(m.group(2), m.group(2))
    return number + approx


def spell_long_digits(m: re.Match) -> str:
    return read_digits(m.group(0), yao_for_one=True)


# ---------------------------------------------------------------- symbols left over

CIRCLED_NUMBERS = {chr(0x2460 + i): c for i, c in enumerate("一二三四五六七八九十")}
GREEK_LETTERS = {
    "α": "阿尔法",
    "β": "贝塔",
    "γ": "伽马",
    "Γ": "伽马",
    "δ": "德尔塔",
    "Δ": "德尔塔",
    "ε": "艾普西隆",
    "ζ": "泽塔",
    "η": "伊塔",
    "θ": "西塔",
    "Θ": "西塔",
    "ι": "约塔",
    "κ": "卡帕",
    "λ": "兰姆达",
    "Λ": "兰姆达",
    "μ": "缪",
    "ν": "纽",
    "ξ": "克西",
    "Ξ": "克西",
    "ο": "奥密克戎",
    "π": "派",
    "Π": "派",
    "ρ": "柔",
    "σ": "西格玛",
    "ς": "西格玛",
    "Σ": "西格玛",
    "τ": "陶",
    "υ": "宇普西隆",
    "φ": "斐",
    "Φ": "斐",
    "χ": "希",
    "ψ": "普西",
    "Ψ": "普西",
    "ω": "欧米伽",
    "Ω": "欧米伽",
}
LEFTOVER_SYMBOL_WORDS = {"/": "每", "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等"}
DROPPED_AFTER_NORMALIZE = re.compile(r"[-—《》【】<=>{}()（）#&@“”^_|\\]")


def spell_leftover_symbols(sentence: str) -> str:
    table = {**CIRCLED_NUMBERS, **GREEK_LETTERS, **LEFTOVER_SYMBOL_WORDS}
    sentence = "".join(table.get(c, c) for c in sentence)
    return DROPPED_AFTER_NORMALIZE.sub("", sentence)


# ---------------------------------------------------------------- the pipeline


def normalize_sentence(sentence: str) -> str:
    """All number/symbol rules, in upstream's order (each rule sees the previous' output)."""
    s = to_simplified(sentence).translate(FULLWIDTH_TO_ASCII)
    s = RE_DATE.sub(spell_date, s)
    s = RE_DATE_NUMERIC.sub(spell_numeric_date, s)
    s = RE_TIME_RANGE.sub(spell_time, s)
    s = RE_TIME.sub(spell_time, s)
    s = RE_TILDE_RANGE.sub(spell_tilde_range, s)
    s = RE_TEMPERATURE.sub(spell_temperature, s)
    s = spell_units(s)
    s = spell_arithmetic(s)
    s = RE_FRACTION.sub(spell_fraction, s)
    s = RE_PERCENTAGE.sub(spell_percentage, s)
    s = RE_MOBILE.sub(spell_mobile, s)
    s = RE_LANDLINE.sub(spell_landline, s)
    s = RE_SERVICE_NUMBER.sub(spell_landline, s)
    s = RE_NUMBER_RANGE.sub(spell_range, s)
    s = RE_NEGATIVE.sub(spell_negative, s)
    s = RE_VERSION.sub(spell_version, s)
    s = RE_DECIMAL.sub(spell_number, s)
    s = RE_QUANTITY.sub(spell_quantity, s)
    s = RE_LONG_DIGITS.sub(spell_long_digits, s)
    s = RE_NUMBER.sub(spell_number, s)
    return spell_leftover_symbols(s)


# Punctuation the phone set can voice; everything else is mapped onto these or dropped.
PUNCTUATION_MAP = {
    **CJK_MARK_PHONES,
    "...": "…",
    "$": ".",
    "/": ",",
    "—": "-",
    "~": "…",
    "～": "…",
}
RE_PUNCTUATION_MAP = re.compile("|".join(re.escape(k) for k in PUNCTUATION_MAP))
_KEPT_PUNCTUATION = "".join(re.escape(p) for p in PUNCTUATION)
RE_NOT_HANZI_OR_PUNCT = re.compile(rf"[^\u4e00-\u9fa5{_KEPT_PUNCTUATION}]+")
RE_REPEATED_PUNCT = re.compile(rf"([{_KEPT_PUNCTUATION}])([{_KEPT_PUNCTUATION}])+")


def map_punctuation(text: str, keep_latin: bool = False) -> str:
    # 嗯/呣 have syllabic-nasal readings (ng/m) outside the phone set.
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = RE_PUNCTUATION_MAP.sub(lambda m: PUNCTUATION_MAP[m.group()], text)
    if keep_latin:
        return re.sub(rf"[^\u4e00-\u9fa5A-Za-z{_KEPT_PUNCTUATION}]+", "", text)
    return RE_NOT_HANZI_OR_PUNCT.sub("", text)


def collapse_repeated_punctuation(text: str) -> str:
    """'……' or '?!' keep only their first mark (repeats would leak into the prosody)."""
    return RE_REPEATED_PUNCT.sub(r"\1", text)


def normalize_chinese(text: str) -> str:
    """Upstream `chinese2.text_normalize` (v1's is identical)."""
    sentences = [normalize_sentence(s) for s in split_sentences(text)]
    return collapse_repeated_punctuation("".join(map_punctuation(s) for s in sentences))
