"""Record upstream GPT-SoVITS' Cantonese frontend output as a parity fixture.

Runs upstream's own `GPT_SoVITS/text` package (cantonese.py, cleaner.py, zh_normalization,
symbols2) at a pinned commit on a list of sentences and writes, per sentence, what upstream's
`cantonese.text_normalize`, `cantonese.g2p`, `cleaner.clean_text(..., "yue", "v2")` and
`cleaned_text_to_sequence` return. Nothing is stubbed: upstream's `text/__init__.py`,
`cleaner.py`, `cantonese.py` and `zh_normalization` only import the standard library, `cn2an`,
`ToJyutping` and `pypinyin` (one constant).

Run it in a separate venv holding only the same ToJyutping, cn2an and pypinyin versions as ours:

    python3 -m venv /tmp/upstream-yue-venv
    /tmp/upstream-yue-venv/bin/pip install ToJyutping==3.2.0 cn2an==0.5.24 pypinyin==0.55.0
    /tmp/upstream-yue-venv/bin/python scripts/record_upstream_cantonese.py \
        --git-dir /path/to/GPT-SoVITS/.git --out tests/fixtures/upstream_text_yue.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile

UPSTREAM_REPO = "RVC-Boss/GPT-SoVITS"
UPSTREAM_COMMIT = "48b1a0169a28582a8984402f82cf438d3bfa6aca"

SENTENCES = [
    # Cantonese-specific characters
    "佢個鋤頭太短啦。",
    "我哋聽日去咗銀行未？",
    "你喺邊度呀？我喺屋企。",
    "唔該晒，我冇錢啊！",
    "佢話今日唔得閒，聽日先至嚟。",
    "乜嘢事呀？咪嘈啦！",
    "嗯，呣好意思。",
    "五月五日食糉，我哋一齊扒龍舟。",
    # numbers: dates, money, percentages, phone-like digit runs, times, units
    "今日係2024年3月15日，天氣幾好。",
    "呢部電話要港幣3500蚊。",
    "股票升咗12.5%，跌咗百分之三。",
    "佢嘅電話號碼係13812345678。",
    "打電話去2345-6789搵我。",
    "熱線電話：400-123-4567。",
    "而家係下晝3:45，我哋5點鐘見。",
    "溫度係-3°C到25°C。",
    "一共有1,234,567個人。",
    "佢今年18歲，身高1.75米。",
    "我哋3-5個人一齊去。",
    "1/2嘅人話好，3/4話唔好。",
    "佢哋喺2023/12/31搬屋。",
    "樓價平均每呎$15000。",
    "佢買咗3.5kg蘋果。",
    "１９９７年香港回歸。",
    "價錢由100到200蚊。",
    "第1名同第2名差3分。",
    # English inside Cantonese
    "佢用iPhone影相，好靚呀！",
    "我今日好happy，因為放假。",
    "我哋用AI同ChatGPT傾偈。",
    "OK啦，冇問題。",
    "我個名叫Tom，今年30歲。",
    "Hello world!",
    # Mandarin-only characters and simplified text
    "這個問題我們需要認真研究。",
    "他们说的话我听不懂。",
    "你好嗎？我很好，謝謝。",
    # punctuation
    "「你食咗飯未？」佢問我。",
    "《香港》係一本書（好睇）。",
    "等一等……我諗下先...",
    "真係？！唔係啩~",
    "唔好咁樣啦——真係冇癮；算啦：",
    "你好\n我係新嚟嘅、多多指教·",
    '佢講："我唔知呀。" [註]',
    # characters with unusual readings
    "卅年前佢喺度住。",
    "傾計傾到凌晨兩點半。",
    "做乜麼都唔怕，於是佢乾咗杯。",
    # a radical with no Jyutping (upstream fails)
    "钅字旁",
]


def extract_upstream(git_dir: str, dest: str) -> None:
    """The Python files of upstream's `GPT_SoVITS/text` at the commit (large data files are not needed)."""
    listing = subprocess.run(
        ["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", UPSTREAM_COMMIT, "GPT_SoVITS/text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in (p for p in listing if p.endswith(".py")):
        source = subprocess.run(
            ["git", "--git-dir", git_dir, "show", f"{UPSTREAM_COMMIT}:{path}"], check=True, capture_output=True
        ).stdout
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(source)


def record_case(text: str, cantonese, cleaner, to_sequence) -> dict:
    case: dict = {"text": text}
    try:
        norm = cantonese.text_normalize(text)
        g2p_phones, word2ph = cantonese.g2p(norm)
        phones, word2ph_clean, norm_clean = cleaner.clean_text(text, "yue", "v2")
    except Exception as exc:  # upstream's failure is part of the record
        case["error"] = type(exc).__name__
        return case
    assert norm_clean == norm and word2ph_clean == word2ph
    case.update(
        norm_text=norm,
        g2p_phones=g2p_phones,
        phones=phones,
        word2ph=word2ph,
        ids=to_sequence(phones, "v2"),
    )
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", required=True, help="git directory of a GPT-SoVITS clone holding the commit")
    parser.add_argument("--out", default="tests/fixtures/upstream_text_yue.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        extract_upstream(args.git_dir, tmp)
        sys.path.insert(0, f"{tmp}/GPT_SoVITS")
        text_pkg = importlib.import_module("text")
        cantonese = importlib.import_module("text.cantonese")
        cleaner = importlib.import_module("text.cleaner")
        cases = [record_case(t, cantonese, cleaner, text_pkg.cleaned_text_to_sequence) for t in SENTENCES]

    fixture = {
        "source": {
            "repo": UPSTREAM_REPO,
            "commit": UPSTREAM_COMMIT,
            "code": "GPT_SoVITS/text/cantonese.py (text_normalize, g2p), cleaner.py (clean_text, 'yue', 'v2'), "
            "__init__.py (cleaned_text_to_sequence, v2)",
            "licence": "MIT",
            "libraries": {name: importlib.metadata.version(name) for name in ("ToJyutping", "cn2an", "pypinyin")},
            "python": platform.python_version(),
            "recorded_by": "scripts/record_upstream_cantonese.py",
        },
        "cases": cases,
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(fixture, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    print(f"{len(cases)} cases -> {args.out}")


if __name__ == "__main__":
    main()
