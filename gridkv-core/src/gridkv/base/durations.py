"""Parsing of duration values: Go-style strings ("250ms", "5m", "1h30m") or seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from gridkv.base._repr import shown

__all__ = ["parse_duration", "format_duration"]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Return ``value`` as a number of seconds.

    Accepts a non-negative ``int`` or ``float`` (seconds), a :class:`~datetime.timedelta`, a
    numeric string ("1.5"), or a Go duration string made of number-unit parts with units
    ``ns``, ``us``, ``ms``, ``s``, ``m`` and ``h`` ("250ms", "5m", "1h30m").

    :raises ValueError: the value is negative, not finite, or not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got the boolean {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond the float range
            seconds = math.inf
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(
            f"expected a duration such as '250ms' or a number of seconds, got {shown(value)}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {shown(value)}")
    return seconds


def _parse_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise ValueError("expected a duration such as '250ms', got an empty string")
    try:
        return float(stripped)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _PART.finditer(stripped):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(stripped) or pos == 0:
        raise ValueError(
            f"{shown(text)} is not a duration: use a number of seconds or units such as "
            "'250ms', '5s', '5m', '1h30m'"
        )
    return total


def format_duration(seconds: float) -> str:
    """Format ``seconds`` the way :func:`parse_duration` reads it back ("1.5s", "250ms", "0s")."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
