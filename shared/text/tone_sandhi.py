"""Mandarin tone sandhi on dictionary pinyin: 不 and 一 changes, neutral tones, third-tone
chains. Same rules as GPT-SoVITS (PaddleSpeech's ToneSandhi), reimplemented.

Finals are strings such as "ao3" whose last character is the tone (5 = neutral). Words
arrive from jieba's POS segmentation, after `merge_for_sandhi` glued together the pieces
the rules need to see as one word (看/一/看, 不/好, 所有/人...).

The neutral-tone word lists are upstream's data (see neutral_tone_words.py). Rules, their
order and the merges are checked against upstream's own class by tests/test_tone_sandhi.py
(fixture recorded by scripts/record_tone_sandhi_fixtures.py).
"""

from __future__ import annotations

from pypinyin import Style, lazy_pinyin

from .jieba_seg import cut_for_search
from .neutral_tone_words import NEUTRAL_TONE_WORDS, NEVER_NEUTRAL_WORDS

Word = tuple[str, str]  # (text, jieba POS tag)

# Sentence-final particles read in the neutral tone.
MODAL_PARTICLES = set("吧呢哈啊呐噻嘛吖嗨哦哒额滴哩哟喽啰耶喔诶")
STRUCTURAL_PARTICLES = set("的地得")
ASPECT_PARTICLES = set("了着过")
ASPECT_TAGS = {"ul", "uz", "ug"}
PLURAL_SUFFIXES = set("们子")
LOCATIVE_SUFFIXES = set("上下里")
LOCATIVE_TAGS = {"s", "l", "f"}
DIRECTIONAL_SUFFIXES = set("来去")
DIRECTIONAL_VERBS = set("上下进出回过起开")
# 个 as a classifier after these is neutral (几个, 两个, 每个, 是个...).
GE_PRECEDERS = set("几有两半多各整每做是")
# Punctuation after 一 keeps it in the first tone (统一。).
SENTENCE_PUNCT = set("：，；。？！“”‘’':,;.?!")


def set_tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def tone_of(final: str) -> str:
    return final[-1:]


def all_third_tone(finals: list[str]) -> bool:
    return all(tone_of(f) == "3" for f in finals)


def dictionary_finals(word: str) -> list[str]:
    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)


def split_in_two(word: str) -> list[str]:
    """Split a word around its shortest search-mode sub-word: 蒙古包 -> [蒙古, 包]."""
    shortest = min(cut_for_search(word), key=len)  # first of the shortest, like a stable sort
    if word.find(shortest) == 0:
        return [shortest, word[len(shortest) :]]
    return [word[: -len(shortest)], shortest]


# ---------------------------------------------------------------- per-word rules


def bu_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":  # 看不懂: the middle 不 is neutral
        finals[1] = set_tone(finals[1], "5")
        return finals
    for i, char in enumerate(word[:-1]):
        if char == "不" and tone_of(finals[i + 1]) == "4":  # 不怕 bú pà
            finals[i] = set_tone(finals[i], "2")
    return finals


def yi_sandhi(word: str, finals: list[str]) -> list[str]:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return finals  # digit strings (一零一) keep yi1
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:
        finals[1] = set_tone(finals[1], "5")  # 看一看
    elif word.startswith("第一"):
        finals[1] = set_tone(finals[1], "1")  # ordinal
    else:
        for i, char in enumerate(word[:-1]):
            if char != "一":
                continue
            if tone_of(finals[i + 1]) == "4":
                finals[i] = set_tone(finals[i], "2")  # 一段 yí duàn
            elif word[i + 1] not in SENTENCE_PUNCT:
                finals[i] = set_tone(finals[i], "4")  # 一天 yì tiān
    return finals


def _is_neutral_word(word: str) -> bool:
    return word in NEUTRAL_TONE_WORDS or word[-2:] in NEUTRAL_TONE_WORDS


def _suffix_makes_neutral(word: str, pos: str) -> bool:
    last, long = word[-1], len(word) > 1
    return (
        last in MODAL_PARTICLES
        or last in STRUCTURAL_PARTICLES
        or (len(word) == 1 and word in ASPECT_PARTICLES and pos in ASPECT_TAGS)  # 走了
        or (long and last in PLURAL_SUFFIXES and pos in {"r", "n"} and word not in NEVER_NEUTRAL_WORDS)
        or (long and last in LOCATIVE_SUFFIXES and pos in LOCATIVE_TAGS)  # 桌上, 家里
        or (long and last in DIRECTIONAL_SUFFIXES and word[-2] in DIRECTIONAL_VERBS)  # 上来
    )


def _classifier_ge_index(word: str) -> int | None:
    ge = word.find("个")
    if word == "个" or (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in GE_PRECEDERS)):
        return ge
    return None


def neutral_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    # Reduplicated nouns/verbs/adjectives: 奶奶, 试试, 旺旺.
    if pos[:1] in {"n", "v", "a"} and word not in NEVER_NEUTRAL_WORDS:
        for j in range(1, len(word)):
            if word[j] == word[j - 1]:
                finals[j] = set_tone(finals[j], "5")
    # Only the first matching case applies, as upstream.
    if _suffix_makes_neutral(word, pos):
        finals[-1] = set_tone(finals[-1], "5")
    elif (ge := _classifier_ge_index(word)) is not None:
        finals[ge] = set_tone(finals[ge], "5")
    elif _is_neutral_word(word):
        finals[-1] = set_tone(finals[-1], "5")
    return _neutral_in_parts(word, finals)


def _neutral_in_parts(word: str, finals: list[str]) -> list[str]:
    # A compound whose halves are neutral-tone words (e.g. 衣服柜 -> 衣服/柜) gets them too.
    parts = split_in_two(word)
    cut = len(parts[0])
    groups = [finals[:cut], finals[cut:]]
    for part, group in zip(parts, groups):
        if group and _is_neutral_word(part):
            group[-1] = set_tone(group[-1], "5")
    return groups[0] + groups[1]


def third_tone_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and all_third_tone(finals):
        finals[0] = set_tone(finals[0], "2")
    elif len(word) == 3:
        finals = _third_tone_trisyllable(word, finals)
    elif len(word) == 4:  # idioms: two pairs
        for start in (0, 2):
            if all_third_tone(finals[start : start + 2]):
                finals[start] = set_tone(finals[start], "2")
    return finals


def _third_tone_trisyllable(word: str, finals: list[str]) -> list[str]:
    parts = split_in_two(word)
    if all_third_tone(finals):
        if len(parts[0]) == 2:  # 蒙古/包
            finals[0] = set_tone(finals[0], "2")
            finals[1] = set_tone(finals[1], "2")
        elif len(parts[0]) == 1:  # 纸/老虎
            finals[1] = set_tone(finals[1], "2")
        return finals
    cut = len(parts[0])
    groups = [finals[:cut], finals[cut:]]
    for i, group in enumerate(groups):
        if all_third_tone(group) and len(group) == 2:  # 所有/人
            group[0] = set_tone(group[0], "2")
        elif (
            i == 1
            and not all_third_tone(group)
            and group
            and groups[0]
            and (tone_of(group[0]) == "3" and tone_of(groups[0][-1]) == "3")
        ):  # 好/喜欢
            groups[0][-1] = set_tone(groups[0][-1], "2")
    return groups[0] + groups[1]


def apply_tone_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    """Upstream `ToneSandhi.modified_tone`: 不, 一, neutral tone, then third tone."""
    finals = bu_sandhi(word, list(finals))
    finals = yi_sandhi(word, finals)
    finals = neutral_sandhi(word, pos, finals)
    return third_tone_sandhi(word, finals)


# ---------------------------------------------------------------- merging jieba words


def merge_bu(words: list[Word]) -> list[Word]:
    """不 joins the word after it (jieba often leaves it alone)."""
    out: list[Word] = []
    pending_bu = False
    for text, pos in words:
        if pending_bu:
            text = "不" + text
        pending_bu = text == "不"
        if not pending_bu:
            out.append((text, pos))
    if pending_bu:
        out.append(("不", "d"))
    return out


def merge_yi(words: list[Word]) -> list[Word]:
    """听/一/听 -> 听一听; a lone 一 joins the word after it."""
    out: list[list[str]] = []
    i = 0
    while i < len(words):
        text, pos = words[i]
        if 0 < i < len(words) - 1 and text == "一":
            left = out[-1] if out else list(words[i - 1])
            right = words[i + 1]
            if left[0] == right[0] and left[1] == "v" and right[1] == "v":
                out[-1] = [left[0] + "一" + right[0], left[1]]
                i += 2
                continue
        out.append([text, pos])
        i += 1
    merged: list[list[str]] = []
    for text, pos in out:
        if merged and merged[-1][0] == "一":
            merged[-1][0] += text
        else:
            merged.append([text, pos])
    return [(t, p) for t, p in merged]


def merge_reduplication(words: list[Word]) -> list[Word]:
    out: list[list[str]] = []
    for text, pos in words:
        if out and text == out[-1][0]:
            out[-1][0] += text
        else:
            out.append([text, pos])
    return [(t, p) for t, p in out]


def _merge_third_tone_runs(words: list[Word], joinable) -> list[Word]:
    finals = [dictionary_finals(text) for text, _ in words]
    out: list[list[str]] = []
    merged_into_previous = [False] * len(words)
    for i, (text, pos) in enumerate(words):
        prev = words[i - 1][0] if i else ""
        if (
            i
            and joinable(finals[i - 1], finals[i])
            and not merged_into_previous[i - 1]
            and not _is_reduplication(prev)
            and len(prev) + len(text) <= 3
        ):
            out[-1][0] += text
            merged_into_previous[i] = True
        else:
            out.append([text, pos])
    return [(t, p) for t, p in out]


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def _both_all_third(prev: list[str], cur: list[str]) -> bool:
    return all_third_tone(prev) and all_third_tone(cur)


def _third_at_junction(prev: list[str], cur: list[str]) -> bool:
    return bool(prev) and bool(cur) and tone_of(prev[-1]) == "3" and tone_of(cur[0]) == "3"


def merge_er(words: list[Word]) -> list[Word]:
    out: list[list[str]] = []
    for i, (text, pos) in enumerate(words):
        if i and text == "儿" and words[i - 1][0] != "#":
            out[-1][0] += text
        else:
            out.append([text, pos])
    return [(t, p) for t, p in out]


def merge_for_sandhi(words: list[Word]) -> list[Word]:
    """Upstream `pre_merge_for_modify`."""
    words = merge_bu(words)
    words = merge_yi(words)
    words = merge_reduplication(words)
    words = _merge_third_tone_runs(words, _both_all_third)
    words = _merge_third_tone_runs(words, _third_at_junction)
    return merge_er(words)
