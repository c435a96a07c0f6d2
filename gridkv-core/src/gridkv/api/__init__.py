"""The API layer: :class:`AsyncGridKV` (asyncio) and :class:`GridKV` (blocking).

- :mod:`gridkv.api.base`: what both share (argument checks, error translation, the fast path);
- :mod:`gridkv.api.aio`: :class:`AsyncGridKV`;
- :mod:`gridkv.api.blocking`: :class:`GridKV`, on a :mod:`~gridkv.api.loop_thread`;
- :mod:`gridkv.api.process`: what a process does with its instances at fork and at exit.
"""

from __future__ import annotations

from gridkv.api.aio import AsyncGridKV
from gridkv.api.base import TTL, Value
from gridkv.api.blocking import GridKV

__all__ = ["AsyncGridKV", "GridKV", "TTL", "Value"]
