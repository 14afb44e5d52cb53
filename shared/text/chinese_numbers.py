"""Reading Arabic numerals out as Chinese characters.

Three readings exist: cardinal (一千零五), digit-by-digit (二零二四, used for years and codes,
optionally with 幺 for 1 as in phone numbers) and decimals (三点五).
"""

from __future__ import annotations

DIGIT_CHARS = "零一二三四五六七八九"
# Place units by power of ten; 万 and 亿 restart the count, so a long number is split at the
# largest unit below its length and both halves are read recursively.
PLACE_UNITS = {1: "十", 2: "百", 3: "千", 4: "万", 8: "亿"}
# The largest quantity read with units: 16 digits, up to 九千九百九十九万亿 (< 10^16). Beyond it
# upstream stacks 亿 (一万亿亿, 一亿亿亿...), which no listener parses, and its recursion fails
# at a few thousand digits; such integers are read digit by digit (a deliberate departure).
MAX_CARDINAL_DIGITS = 16


def read_digits(digits: str, yao_for_one: bool = False) -> str:
    """Digit by digit: '2024' -> 二零二四; codes/phone numbers say 幺 for 1."""
    text = "".join(DIGIT_CHARS[int(d)] for d in digits)
    return text.replace("一", "幺") if yao_for_one else text


def _cardinal_parts(digits: str, zero_if_padded: bool = True) -> list[str]:
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        # A padded single digit ("05" after 千) is read with a 零 in front.
        if zero_if_padded and len(significant) < len(digits):
            return [DIGIT_CHARS[0], DIGIT_CHARS[int(significant)]]
        return [DIGIT_CHARS[int(significant)]]
    power = max(p for p in PLACE_UNITS if p < len(significant))
    head, tail = digits[:-power], digits[-power:]
    return _cardinal_parts(head) + [PLACE_UNITS[power]] + _cardinal_parts(tail)


def read_cardinal(digits: str) -> str:
    """Integer as a quantity: '1050' -> 一千零五十, '15' -> 十五 (not 一十五)."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return DIGIT_CHARS[0]
    if len(digits) > MAX_CARDINAL_DIGITS:
        return read_digits(digits)
    parts = _cardinal_parts(digits)  # recursion depth <= 3 within the bound
    if len(parts) >= 2 and parts[0] == DIGIT_CHARS[1] and parts[1] == PLACE_UNITS[1]:
        parts = parts[1:]
    return "".join(parts)


def _decimal_digits(fraction: str) -> str:
    # Upstream keeps one trailing zero when the fraction ends in zeros ("3.50" -> 三点五零,
    # "3.0" -> 三点零); reproduced for parity.
    if fraction.endswith("0"):
        return fraction.rstrip("0") + "0"
    return fraction


def read_number(text: str) -> str:
    """Integer or decimal quantity: '3.5' -> 三点五, '.25' -> 零点二五."""
    parts = text.split(".")
    if len(parts) > 2:
        raise ValueError(f"number {text!r} has more than one decimal point")
    integer, fraction = (parts[0], "") if len(parts) == 1 else parts
    spoken = read_cardinal(integer)
    fraction = _decimal_digits(fraction)
    if fraction:
        spoken = (spoken or DIGIT_CHARS[0]) + "点" + read_digits(fraction)
    return spoken


def read_clock_number(digits: str) -> str:
    """Minutes/seconds keep a spoken leading zero: '05' -> 零五."""
    spoken = read_number(digits.lstrip("0"))
    return DIGIT_CHARS[0] + spoken if digits.startswith("0") else spoken
