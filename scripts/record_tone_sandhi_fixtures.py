#!/usr/bin/env python3
"""Record upstream GPT-SoVITS tone sandhi on a fixed set of sentences, as a test fixture.

Runs upstream's own ToneSandhi class (imported from a checkout of its source) with jieba_fast
and pypinyin, and writes, for every sentence: jieba's POS segmentation, the words after
upstream's merge step, and each merged word's dictionary finals (pypinyin FINALS_TONE3 with
neutral tone 5, as upstream's chinese2.py takes them when g2pW is off) before and after the
sandhi. It also records the sizes and a hash of upstream's two neutral-tone word lists.

tests/test_tone_sandhi.py replays the fixture against dora_gpt_sovits.text.tone_sandhi.

Needs a Python environment with jieba_fast and pypinyin (keep it apart from the project's):

    python3 -m venv /tmp/upstream-venv
    /tmp/upstream-venv/bin/pip install jieba_fast==0.53 pypinyin==0.55.0
    git --git-dir <mirror> archive 48b1a01 GPT_SoVITS/text/tone_sandhi.py | tar -x -C /tmp/up
    /tmp/upstream-venv/bin/python scripts/record_tone_sandhi_fixtures.py \
        --upstream /tmp/up --commit 48b1a0169a28582a8984402f82cf438d3bfa6aca
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import platform
import subprocess
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tone_sandhi_upstream.json"

# Chosen to hit the word lists (晚上/知道 are not in upstream's list; 在乎, 不在, 什么, 怎么
# are), the never-neutral words, reduplication, 一/不, 个, suffixes, and third-tone chains.
SENTENCES = [
    "今天晚上我们去吃饭。",
    "我知道你在想什么。",
    "你怎么不在家里？",
    "我一点也不在乎。",
    "这个东西多少钱？",
    "那个姑娘很漂亮。",
    "他是我的好朋友。",
    "男子和女子都来了。",
    "人人都喜欢熙熙攘攘的街道。",
    "你想想这个问题。",
    "我们数数有多少个苹果。",
    "老师要考考你们。",
    "他们整天吵吵闹闹。",
    "孩子们打打闹闹的。",
    "整整一天都在下雨。",
    "看一看，试试看。",
    "奶奶和爷爷在院子里。",
    "我不怕困难。",
    "他看不懂这本书。",
    "第一次去北京。",
    "一段时间以后，统一。",
    "我买了一百零一个。",
    "展览馆里有蒙古包。",
    "纸老虎不可怕。",
    "所有人都到了。",
    "我也很想你。",
    "请你给我买五把小雨伞。",
    "我很喜欢小狗。",
    "这是一个什么样的地方？",
    "他的脾气不好。",
    "明白了吗？",
    "我们商量一下。",
    "咱们休息一会儿吧。",
    "这件衣服很便宜。",
    "我告诉你一个消息。",
    "那么多的事情，这么晚了还不睡觉？",
    "他是一个很聪明的学生。",
    "说说看，你的意思是什么？",
    "落地窗外是一片耕地。",
    "以下是局地天气预报。",
    "瓜子、莲子和石子。",
    "电子、原子和分子都很小。",
    "量子力学很难。",
    "冉冉升起的太阳。",
    "莘莘学子来到这里。",
    "青青的草地上开满了花。",
    "花花草草真好看。",
    "家家户户都很热闹。",
    "他勤勤恳恳地工作。",
    "死死地抓住绳子。",
    "你干嘛这么生气？",
    "娃哈哈很好喝，哈哈。",
    "桌上有三个杯子。",
    "他走出去了，我们上来吧。",
    "他说得很好，走着去过。",
    "虎虎生威，幺幺零。",
    "他是佼佼者。",
    "留得青山在，不怕没柴烧。",
    "一辈子都很幸福。",
    "父亲和母亲很熟悉这个计划。",
    "这个算子很复杂。",
    "他不由得笑了起来。",
    "一天一天地过去了。",
    "他不会不来的。",
    "女儿在小院儿里玩。",
    "老老实实地做人。",
    "你这人真是马马虎虎。",
    "他的本事很大，厉害得很。",
    "我们那儿的人家都很客气。",
    "你先休息，我去打听打听。",
    "让我再想想办法。",
    "你去数数，我来考考他。",
    "别吵吵了。",
    "没事就打打，闹闹。",
    "熙熙，攘攘。",
    "他是知识分子。",
    "晚上好！",
    "他不知道这件事。",
    "你怎么知道的？",
    "我不在乎他怎么想。",
    "胡萝卜和老头子。",
    "那个小伙子是老太太的孙子。",
    "几个人每个都来了，二十个苹果。",
]


def load_tone_sandhi(upstream: Path):
    path = upstream / "GPT_SoVITS" / "text" / "tone_sandhi.py"
    spec = importlib.util.spec_from_file_location("upstream_tone_sandhi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ToneSandhi()


def upstream_commit(upstream: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(upstream), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit("cannot tell the upstream commit: pass --commit")


def list_digest(words) -> dict:
    ordered = sorted(words)
    return {"count": len(ordered), "sha256": hashlib.sha256("\n".join(ordered).encode()).hexdigest()}


def record_sentence(sandhi, text: str) -> dict:
    import jieba_fast.posseg as psg
    from pypinyin import Style, lazy_pinyin

    segments = [[w, p] for w, p in psg.lcut(text)]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # upstream prints when a merge step fails
        merged = sandhi.pre_merge_for_modify([(w, p) for w, p in segments])
    words = []
    for word, pos in merged:
        finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
        after = sandhi.modified_tone(word, pos, list(finals))
        words.append({"word": word, "pos": pos, "finals": finals, "sandhi": list(after)})
    case = {"text": text, "segments": segments, "merged": [[w, p] for w, p in merged], "words": words}
    if log.getvalue():
        case["upstream_log"] = log.getvalue()
    return case


def to_json(fixture: dict) -> str:
    """Indented JSON with each segmentation and each word on one line, to keep diffs readable."""

    def flat(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    head = {k: v for k, v in fixture.items() if k != "cases"}
    lines = [json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "cases": [']
    for n, case in enumerate(fixture["cases"]):
        fields = [
            f'  "text": {flat(case["text"])}',
            f'  "segments": {flat(case["segments"])}',
            f'  "merged": {flat(case["merged"])}',
        ]
        if "upstream_log" in case:
            fields.append(f'  "upstream_log": {flat(case["upstream_log"])}')
        words = ",\n".join(f"   {flat(w)}" for w in case["words"])
        fields.append(f'  "words": [\n{words}\n  ]')
        lines.append(" {\n" + ",\n".join(fields) + "\n }" + ("," if n < len(fixture["cases"]) - 1 else ""))
    lines.append(" ]\n}\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", type=Path, required=True, help="checkout of upstream GPT-SoVITS source")
    parser.add_argument("--commit", help="upstream commit of that checkout (default: git rev-parse HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import jieba_fast

    jieba_fast.setLogLevel(60)
    sandhi = load_tone_sandhi(args.upstream)
    fixture = {
        "source": {
            "repository": "https://github.com/RVC-Boss/GPT-SoVITS",
            "path": "GPT_SoVITS/text/tone_sandhi.py",
            "commit": upstream_commit(args.upstream, args.commit),
            "recorded_with": {
                "python": platform.python_version(),
                "jieba_fast": importlib.metadata.version("jieba_fast"),
                "pypinyin": importlib.metadata.version("pypinyin"),
            },
            "finals": "pypinyin.lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)",
            "script": "scripts/record_tone_sandhi_fixtures.py",
        },
        "word_lists": {
            "neutral": list_digest(sandhi.must_neural_tone_words),
            "never_neutral": list_digest(sandhi.must_not_neural_tone_words),
            "digest": "sha256 of the words sorted by code point, joined by newlines, UTF-8",
        },
        "cases": [record_sentence(sandhi, text) for text in SENTENCES],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(fixture), encoding="utf-8")
    print(f"{len(fixture['cases'])} cases -> {args.out}")


if __name__ == "__main__":
    main()
