"""English text normalisation: numbers, ordinals, money, times, units and percentages spelled
out with `inflect`, accents stripped, and everything outside letters and ' . , ? ! - dropped.

Rules and order follow GPT-SoVITS' `en_normalization/expend.py` so that the phones match
upstream; its oddities are kept and marked QUIRK unless noted as a deliberate fix.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from .symbols import PUNCTUATION


@functools.lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def number_words(n, **options) -> str:
    return _inflect().number_to_words(n, **options)


# inflect names numbers below 10^36 (up to "nine hundred ninety-nine decillion ..."), upstream's
# own limit: a longer integer raised from inflect there. Longer ones are read digit by digit, and
# no int() is taken of them (Python refuses int() of over 4300 digits; a long one is slow).
MAX_SPELLED_DIGITS = 36
DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def cardinal_words(digits: str, **options) -> str:
    """An integer written in digits, spelled: as a quantity by inflect, or digit by digit."""
    significant = digits.lstrip("0")
    if len(significant) > MAX_SPELLED_DIGITS:
        return " ".join(DIGIT_WORDS[int(d)] for d in significant)
    return number_words(int(significant or "0"), **options)


def _int_text(digits: str) -> str:
    """str(int(digits)) without int(): the digits without leading zeros."""
    return digits.lstrip("0") or "0"


def ordinal_of(n) -> str:
    return _inflect().ordinal(n)


# Regexes that start with a run of digits begin with (?<!\d) (or its [0-9] form): tried at every
# digit of a long run, each attempt would scan to the run's end (quadratic; the money ones, with
# two overlapping quantifiers, cubic). A match that starts inside a run implies one from the run's
# start, which comes first, and no match of these ends inside a run, so what they match is
# unchanged (tests/test_text_scaling.py compares them with upstream's forms).

# ---------------------------------------------------------------- list numbering, arithmetic

RE_LIST_NUMBER = re.compile(r"\b([0-9]+)\. ")  # "1. " at the start of an item -> "1st, "
_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)(?<!\d)((\d+)(\.\d+)?[{_SUPERSCRIPTS}]*)|(\.\d+[{_SUPERSCRIPTS}]*)|([A-Za-z][{_SUPERSCRIPTS}]*))"
RE_ARITHMETIC = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
OPERATOR_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
RE_NEGATIVE = re.compile(r"(^|\s+)-(\d+)")


def spell_list_number(m: re.Match) -> str:
    return ordinal_of(m.group(1)) + ", "


def spell_operator(m: re.Match) -> str:
    return m.group(1) + OPERATOR_WORDS[m.group(8)] + m.group(9)


def spell_negative(m: re.Match) -> str:
    # Deliberate fix: upstream also swallows the preceding space ("was -5" -> "wasnegative 5").
    return m.group(1) + "negative " + m.group(2)


# ---------------------------------------------------------------- times, units

RE_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
RE_TIME = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
UNIT_NAMES = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}
RE_MEASUREMENT = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")


def spell_time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{number_words(hours)} o'clock {period}"
    return f"{number_words(hours)} {number_words(minutes)} {period}"


def spell_measurement(m: re.Match) -> str:
    unit = m.group(3)
    # Singular only for exactly "1"; "1.0" and "0.1" are plural.
    amount = _int_text(m.group(1).replace(unit, "").replace(".", ""))
    singular = m.group(2) is None and amount == "1"
    return m.group(1).replace(unit, " " + UNIT_NAMES[unit][0 if singular else 1])


# ---------------------------------------------------------------- money

RE_POUNDS_BEFORE = re.compile(r"£([0-9\.\,]*[0-9]+)")
RE_POUNDS_AFTER = re.compile(r"(?<![0-9\.\,])([0-9\.\,]*[0-9])£")
RE_DOLLARS_BEFORE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
RE_DOLLARS_AFTER = re.compile(r"(?<![(0-9\.\,])([(0-9\.\,]*[0-9])\$")


def _money(amount: str, major: tuple[str, str], minor: tuple[str, str]) -> str:
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} {major[1]}"
    whole = _int_text(parts[0])
    cents = _int_text(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else "0"
    spoken = []
    if whole != "0":
        spoken.append(f"{whole} {major[0] if whole == '1' else major[1]}")
    if cents != "0":
        spoken.append(f"{cents} {minor[0] if cents == '1' else minor[1]}")
    return " and ".join(spoken) if spoken else f"zero {major[1]}"


def spell_pounds(m: re.Match) -> str:
    return _money(m.group(1), ("pound", "pounds"), ("penny", "pence"))


def spell_dollars(m: re.Match) -> str:
    return _money(m.group(1), ("dollar", "dollars"), ("cent", "cents"))


# ---------------------------------------------------------------- plain numbers

RE_DECIMAL = re.compile(r"(?<![0-9])([0-9]+\.\s*[0-9]+)")
RE_FRACTION = re.compile(r"(?<![0-9])([0-9]+/[0-9]+)")
RE_ORDINAL = re.compile(r"(?<![0-9])[0-9]+(st|nd|rd|th)")
RE_INTEGER = re.compile(r"[0-9]+")


def spell_decimal(m: re.Match) -> str:
    whole, fraction = m.group(1).split(".")[:2]
    return whole + " point " + " ".join(fraction)


def spell_fraction(m: re.Match) -> str:
    numerator, denominator = map(_int_text, m.group(0).split("/"))
    top = cardinal_words(numerator)
    if denominator == "1":
        return top
    if denominator == "2":
        bottom = "half" if numerator == "1" else "halves"
    else:
        plural = numerator not in ("0", "1")
        bottom = ordinal_of(cardinal_words(denominator)) + ("s" if plural else "")
    return f"{top} {bottom}"


def spell_ordinal(m: re.Match) -> str:
    digits = m.group(0)[:-2]
    if len(digits.lstrip("0")) > MAX_SPELLED_DIGITS:
        return ordinal_of(cardinal_words(digits))  # "one two ... ninth"
    return number_words(m.group(0))


def spell_integer(m: re.Match) -> str:
    if len(m.group(0).lstrip("0")) > MAX_SPELLED_DIGITS:
        return cardinal_words(m.group(0))
    n = int(m.group(0))
    if 1000 < n < 3000:  # years are read in pairs: nineteen ninety-nine
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + number_words(n % 100)
        if n % 100 == 0:
            return number_words(n // 100) + " hundred"
        return number_words(n, andword="", zero="oh", group=2).replace(", ", " ")
    return number_words(n, andword="")


# ---------------------------------------------------------------- the pipeline

RE_NOT_KEPT = re.compile(r"[^ A-Za-z'.,?!\-]")
RE_INNER_CAPITAL = re.compile(r"(?<!^)(?<![\s])([A-Z])")


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def spell_numbers(text: str) -> str:
    text = RE_LIST_NUMBER.sub(spell_list_number, text)
    while RE_ARITHMETIC.search(text):
        text = RE_ARITHMETIC.sub(spell_operator, text)
    text = RE_NEGATIVE.sub(spell_negative, text)
    text = RE_COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = RE_TIME.sub(spell_time, text)
    text = RE_MEASUREMENT.sub(spell_measurement, text)
    text = RE_POUNDS_BEFORE.sub(spell_pounds, text)
    text = RE_POUNDS_AFTER.sub(spell_pounds, text)
    text = RE_DOLLARS_BEFORE.sub(spell_dollars, text)
    text = RE_DOLLARS_AFTER.sub(spell_dollars, text)
    text = RE_DECIMAL.sub(spell_decimal, text)
    text = RE_FRACTION.sub(spell_fraction, text)
    text = RE_ORDINAL.sub(spell_ordinal, text)
    return RE_INTEGER.sub(spell_integer, text)


def expand(text: str) -> str:
    """Upstream `expend.normalize`."""
    text = strip_accents(spell_numbers(text))
    text = text.replace("%", " percent")
    text = RE_NOT_KEPT.sub("", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    # Split glued capitals ("iPhone" -> "i Phone", "GPT" -> "G P T"): read as letters/words.
    return RE_INNER_CAPITAL.sub(r" \1", text)


_KEPT_PUNCT = "".join(re.escape(p) for p in PUNCTUATION)
RE_REPEATED_PUNCT = re.compile(rf"([{_KEPT_PUNCT}\s])([{_KEPT_PUNCT}])+")


def collapse_repeated_punctuation(text: str) -> str:
    # QUIRK (upstream): a mark right after a space is dropped too ("word ." -> "word ").
    return RE_REPEATED_PUNCT.sub(r"\1", text)


def normalize_english(text: str) -> str:
    """Upstream `english.text_normalize`. Its punctuation map (：；→ , etc.) never fires
    upstream (the keys are escaped regexes), so ':' and ';' are simply dropped here too."""
    return collapse_repeated_punctuation(expand(text))
