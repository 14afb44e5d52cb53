"""Erhua (儿化) for the v2 Chinese frontend.

A word-final 儿 that is an r-colouring suffix (玩儿, 胡同儿) is not a syllable of its own; the
phone set still gives it an `er` final, so it takes the tone of the syllable it colours.
Where 儿 is a real morpheme ("child": 女儿, 婴儿; poetic/diminutive nouns: 花儿, 鸟儿) or in
abbreviations, adjectives and person names, it keeps its own er2.
"""

from __future__ import annotations

# Words read with erhua even when their POS would say otherwise.
ALWAYS_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 妥妥儿 媳妇儿 一会儿 一点儿 哥们儿".split())

# 儿 as a full syllable.
NEVER_ERHUA = frozenset(
    """
女儿 男儿 儿子 婴儿 幼儿 孤儿 患儿 少儿 健儿 宠儿 侄儿 孙儿 侄孙儿 外孙儿 妻儿 我儿
俺儿 有儿 一儿 为儿 救儿 护儿 替儿 虐儿 瞒儿 拐儿 乞儿 聋儿 婴幼儿 混血儿 流浪儿 弃儿 胎儿
新生儿 早产儿 连体儿 脑瘫儿 体弱儿 红孩儿 花儿 鸟儿 马儿 猫儿 狗儿 猪儿 虫儿 鱼儿 雁儿
蜜雪儿 应采儿 可儿 美儿 祖儿 舫儿
""".split()
)

# Adjectives, abbreviations and person names: 儿 stays a syllable.
NO_ERHUA_TAGS = {"a", "j", "nr"}


def apply_erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    finals = list(finals)
    last = len(finals) - 1
    # pypinyin sometimes gives the suffix 儿 a first tone; the suffix is never er1.
    if last >= 0 and last < len(word) and word[last] == "儿" and finals[last] == "er1":
        finals[last] = "er2"
    if word not in ALWAYS_ERHUA and (word in NEVER_ERHUA or pos in NO_ERHUA_TAGS):
        return initials, finals
    if len(finals) != len(word):  # punctuation runs such as "……"
        return initials, finals
    if last >= 1 and word[last] == "儿" and finals[last] in {"er2", "er5"} and word[-2:] not in NEVER_ERHUA:
        finals[last] = "er" + finals[last - 1][-1]
    return initials, finals
