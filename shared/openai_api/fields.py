"""Checks of single JSON fields of a request, each refusing with a 400 that names the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ApiError


def number(
    body: Mapping[str, Any], name: str, bounds: tuple[float, float], integer: bool = False, open_low: bool = False
) -> Any:
    """An optional number within ``bounds`` (``open_low``: the lower bound itself is excluded)."""
    value = body.get(name)
    if value is None:
        return None
    wanted = "an integer" if integer else "a number"
    # An int is checked as an int: float() of a 400-digit integer raises OverflowError.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and isinstance(value, float) and not value.is_integer())
    ):
        raise ApiError(400, f"'{name}' must be {wanted}, got {short(value)}", name, "invalid_type")
    low, high = bounds
    if (
        (isinstance(value, float) and not math.isfinite(value))
        or value > high
        or value < low
        or (open_low and value == low)
    ):
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ApiError(400, f"'{name}' must be in {interval}, got {short(value)}", name, "out_of_range")
    return int(value) if integer else float(value)


def short(value: Any, limit: int = 80) -> str:
    """A value for an error message: ascii() (a lone surrogate stays printable), at most ``limit``
    characters (a client's megabyte of JSON is not echoed back). repr of a huge int is not even made."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ascii_name(value: Any) -> str:
    return value if isinstance(value, str) and value.isascii() else short(value)
