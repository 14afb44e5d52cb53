"""Every text path is linear in its input: the time per character at 100,000 characters stays within
a constant factor of that at 1,000/10,000 (issue #15: Chinese digit runs were quadratic, English
ones cubic, the LLM stream splitter quadratic on unpunctuated text). Ratios, not absolute times:
the minimum of a few repeats per size, so a busy machine slows every size alike (`-s` prints the
figures).

Also here: the number regexes anchored at the start of a digit run (what made the normalisers
linear) match exactly what upstream's forms match.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dora_gpt_sovits.text import chinese_normalize as zh_norm
from dora_gpt_sovits.text import english_normalize as en_norm
from dora_gpt_sovits.text.llm_stream import TurnSentences
from dora_gpt_sovits.text.segment_limits import segment_text

pytestmark = pytest.mark.slow  # 1k/10k/100k-character runs: seconds each

ZH = "今天天气很好我们去公园散步吧小明说他明天要去北京参加一个很重要的会议"
EN_WORDS = "the quick brown fox jumps over a lazy dog while seven people watch from far away".split()
SIZES = (1_000, 10_000, 100_000)
# Chinese G2P (jieba + pypinyin) costs ~120 us/char on this 2-core machine: a 100k run is ~12 s,
# ~25 s under the load of a shared CI box, so the two Chinese paths stop at 30k. Each top size is
# compared with 1k as well as 10k, so a quadratic term still shows as 30x there.
TOP = {"chinese digits": 30_000, "unpunctuated chinese": 30_000}
REPEATS = {1_000: 3, 10_000: 2}  # the top size runs once
FACTOR = 5  # a quadratic path grows 10x per decade; the linear ones measured 0.8-1.5x


def digits(n: int) -> str:
    rng = random.Random(n)
    return "".join(rng.choice("0123456789") for _ in range(n))


def english(n: int) -> str:
    rng = random.Random(n)
    words = [rng.choice(EN_WORDS) for _ in range(n // 3)]  # >= n characters: words have 1-6 letters
    return " ".join(words)[:n]


def chinese(n: int) -> str:
    return (ZH * (n // len(ZH) + 1))[:n]


def frontend(language: str):
    def run(text: str) -> None:
        segments = list(segment_text(text, language))
        assert segments and all(s.error is None for s in segments)

    return run


def stream(text: str) -> None:
    turn = TurnSentences()
    sentences = [s for i in range(0, len(text), 7) for s in turn.push(text[i : i + 7])] + turn.end()
    assert len(sentences) > len(text) // 100


PATHS = {
    "chinese digits": (digits, frontend("zh")),
    "english digits": (digits, frontend("en")),
    "unpunctuated chinese": (chinese, frontend("zh")),
    "unpunctuated english": (english, frontend("en")),
    "llm stream, unpunctuated": (chinese, stream),
}


def seconds_per_char(make, run, n: int) -> float:
    text = make(n)
    best = float("inf")
    for _ in range(REPEATS.get(n, 1)):
        started = time.perf_counter()
        run(text)
        best = min(best, time.perf_counter() - started)
    return best / n


@pytest.mark.parametrize("path", list(PATHS))
def test_time_per_character_does_not_grow_with_the_text(path):
    make, run = PATHS[path]
    run(make(200))  # load dictionaries and models outside the timing
    sizes = (*SIZES[:2], TOP.get(path, SIZES[2]))
    cost = {n: seconds_per_char(make, run, n) for n in sizes}
    figures = ", ".join(f"{n}: {c * 1e6:.1f} us/char" for n, c in cost.items())
    print(f"{path}: {figures}")
    top = cost[sizes[-1]]
    assert top <= FACTOR * cost[sizes[0]] and top <= FACTOR * cost[sizes[1]], f"{path}: {figures}"


# ---- the anchored regexes match what upstream's do ---------------------------------------------------
_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_UPSTREAM_OPERAND = rf"((-?)((\d+)(\.\d+)?[{_SUP}]*)|(\.\d+[{_SUP}]*)|([A-Za-z][{_SUP}]*))"
UPSTREAM_FORMS = [
    (en_norm.RE_ARITHMETIC, _UPSTREAM_OPERAND + r"\s+([\+\-\×÷=])\s+" + _UPSTREAM_OPERAND),
    (en_norm.RE_POUNDS_AFTER, r"([0-9\.\,]*[0-9]+)£"),
    (en_norm.RE_DOLLARS_AFTER, r"([(0-9\.\,]*[0-9]+)\$"),
    (en_norm.RE_DECIMAL, r"([0-9]+\.\s*[0-9]+)"),
    (en_norm.RE_FRACTION, r"([0-9]+/[0-9]+)"),
    (en_norm.RE_ORDINAL, r"[0-9]+(st|nd|rd|th)"),
    (zh_norm.RE_ARITHMETIC, _UPSTREAM_OPERAND + r"([\+\-\×÷=])" + _UPSTREAM_OPERAND),
    (zh_norm.RE_TEMPERATURE, r"(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)"),
    (zh_norm.RE_FRACTION, r"(-?)(\d+)/(\d+)"),
    (zh_norm.RE_PERCENTAGE, r"(-?)(\d+(\.\d+)?)%"),
    (zh_norm.RE_DECIMAL, r"(-?)((\d+)(\.\d+))|(\.(\d+))"),
    (zh_norm.RE_VERSION, r"((\d+)(\.\d+)(\.\d+)?(\.\d+)+)"),
    (
        zh_norm.RE_QUANTITY,
        rf"(\d+)([多余几\+])?(?=[{zh_norm.SINGLE_MEASURE_WORDS}]|{'|'.join(zh_norm.MULTI_MEASURE_WORDS)})",
    ),
]
number_text = st.lists(
    st.sampled_from(
        list("0123456789") * 4 + list(".-,/%+=×÷ ($£a") + ["°C", "度", "个", "多", "小时", "st", "th", "²", "٣", "\t"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(number_text)
def test_anchored_number_regexes_match_what_upstreams_match(text):
    for ours, upstream in UPSTREAM_FORMS:
        found = [(m.span(), m.groups()) for m in ours.finditer(text)]
        assert found == [(m.span(), m.groups()) for m in re.compile(upstream).finditer(text)], ours.pattern
