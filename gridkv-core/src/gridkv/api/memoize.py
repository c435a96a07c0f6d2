"""What ``@kv.cached`` needs besides ``get_or_set``: a key per call, and values as bytes.

A cached function's key is, by default, its module and qualified name followed by a digest
of the ``repr`` of its arguments (so ``f(1)`` and ``f(2)`` are different keys, and every
process computes the same key for the same arguments of plain types: str, int, float,
tuples, lists, dicts in the same order). ``key="user:{0}"`` formats the arguments into the
key instead (``str.format``), and ``key=callable`` computes it from them.

Values are pickled by default: a cached function may return any picklable object.
Unpickling runs code, and whoever can write a key can have it run where the key is read:
every authenticated member of the cluster, and every client of a RESP door without a
password. Where others write the cache, pass ``dumps``/``loads`` that build only data (for
example ``json``'s).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from typing import Any

from gridkv.base._repr import shown
from gridkv.base.errors import InvalidArgument

__all__ = ["KeySpec", "key_function", "pickled", "unpickled"]

#: How ``@cached`` names a call's key: ``None`` (the function's name and a digest of its
#: arguments), a ``str.format`` template, or a function of the arguments.
KeySpec = str | Callable[..., str] | None


def key_function(func: Callable[..., Any], key: KeySpec) -> Callable[..., str]:
    """The function that gives a call of ``func`` its key.

    :raises InvalidArgument: ``key`` is neither ``None``, a str nor callable.
    """
    if callable(key):
        return key
    if key is not None and not isinstance(key, str):
        raise InvalidArgument(
            f"cached(key=...) takes None, a str.format template or a function, got {shown(key)}"
        )
    if key is not None and "{" in key:
        template = key

        def formatted(*args: Any, **kwargs: Any) -> str:
            return template.format(*args, **kwargs)

        return formatted
    prefix = key or f"{func.__module__}.{func.__qualname__}"

    def digested(*args: Any, **kwargs: Any) -> str:
        if not args and not kwargs:
            return prefix
        described = repr((args, sorted(kwargs.items()))).encode("utf-8", "backslashreplace")
        return f"{prefix}:{hashlib.blake2b(described, digest_size=16).hexdigest()}"

    return digested


def pickled(value: Any) -> bytes:
    """``value`` pickled (the highest protocol)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpickled(raw: bytes) -> Any:
    """A value :func:`pickled` made."""
    return pickle.loads(raw)  # whoever may write the key may run code here: see above
