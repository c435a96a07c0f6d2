"""A short, safe ``repr`` of a value that came from outside, for error messages.

Errors name the value they refuse, and that value may come from a hostile peer or a broken
configuration file: nested a thousand levels deep (``repr`` would raise RecursionError), a
YAML alias bomb (``repr`` would expand it exponentially), an integer with more digits than
Python converts to text (``repr`` raises ValueError), or an object whose ``__repr__`` raises.
:func:`shown` bounds the depth, the items and the length it looks at, so it is cheap whatever
the value is, and never raises.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["shown", "SHOWN_LIMIT"]

#: Characters of a value an error message shows at most.
SHOWN_LIMIT = 80
#: Integers wider than this are shown by their size: ``repr`` of a huge one is slow, or raises.
_MAX_SHOWN_INT_BITS = 256


class _Repr(reprlib.Repr):
    """reprlib's bounded repr, extended to bytes and to integers of any size."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _MAX_SHOWN_INT_BITS:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:  # as reprlib does, without the address: an error names the type
            return f"<{type(x).__name__} object>"
        if len(text) <= self.maxother:
            return text
        head = max(0, (self.maxother - 3) // 2)
        tail = max(0, self.maxother - 3 - head)
        return text[:head] + "..." + text[len(text) - tail :]

    def repr_bytes(self, x: bytes, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return repr(x[: self.maxstring]) + "..."


_REPR = _Repr()
_REPR.maxlevel = 4
_REPR.maxstring = SHOWN_LIMIT
_REPR.maxother = SHOWN_LIMIT
_REPR.maxlong = SHOWN_LIMIT


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; bounded work for any value; never raises."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a __repr__ that raises must not replace the error being reported
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
