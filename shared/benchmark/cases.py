"""The texts benchmarked: short, medium and long, in Chinese and English.

Sentence sizes are ordinary prose, so ``cut5`` (split after every punctuation mark, the default of
the text-frontend node) yields clause-sized segments as it would for real input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextCase:
    name: str  # e.g. "zh-short"
    language: str  # "zh" or "en"
    length: str  # "short", "medium", "long"
    text: str


TEXTS: dict[tuple[str, str], str] = {
    ("zh", "short"): "今天天气很好，我们一起去公园散步吧。",
    ("zh", "medium"): (
        "语音合成技术可以把文字变成自然流畅的声音。它被广泛用于导航软件、有声读物和智能助手。"
        "今天我们来测一测它到底有多快。"
    ),
    ("zh", "long"): (
        "语音合成技术可以把文字变成自然流畅的声音。它被广泛用于导航软件、有声读物和智能助手。"
        "早期的系统听起来非常机械，每个字都像是单独念出来的。后来，研究人员开始使用神经网络来建模语音，"
        "合成的声音越来越接近真人。现在，只需要几秒钟的参考录音，就可以模仿一个人的音色。"
        "为了让用户几乎感觉不到等待，系统必须在文字到达之后很快地播放出第一段声音。"
    ),
    ("en", "short"): "The weather is lovely today, so let us take a walk in the park.",
    ("en", "medium"): (
        "Speech synthesis turns written text into natural sounding audio. It is used in navigation apps, "
        "audio books and voice assistants. Today we measure how fast it really is."
    ),
    ("en", "long"): (
        "Speech synthesis turns written text into natural sounding audio. It is used in navigation apps, "
        "audio books and voice assistants. Early systems sounded very mechanical, as if every word had been "
        "recorded on its own. Later, researchers began to model speech with neural networks, and the voices "
        "came ever closer to real people. Today a few seconds of reference audio are enough to imitate a "
        "speaker. To keep users from noticing any wait, the system has to play the first sound very soon "
        "after the text arrives."
    ),
}
LANGUAGES = ("zh", "en")
LENGTHS = ("short", "medium", "long")


def select_cases(languages: list[str] | None = None, lengths: list[str] | None = None) -> list[TextCase]:
    chosen = []
    for language in languages or LANGUAGES:
        for length in lengths or LENGTHS:
            if (language, length) not in TEXTS:
                raise ValueError(f"no benchmark text for {language}/{length}")
            chosen.append(TextCase(f"{language}-{length}", language, length, TEXTS[(language, length)]))
    return chosen


def warmup_cases(cases: list[TextCase]) -> list[TextCase]:
    """The shortest selected text of each language: enough to warm every code path (lazy imports,
    G2P dictionaries, first-call allocations) without paying a long text's time for nothing."""
    first: dict[str, TextCase] = {}
    for case in cases:
        if case.language not in first or len(case.text) < len(first[case.language].text):
            first[case.language] = case
    return list(first.values())
