"""The API layer: :class:`AsyncGridKV` (asyncio) and :class:`GridKV` (blocking)."""

from __future__ import annotations

from gridkv.api.client import TTL, AsyncGridKV, GridKV, Value

__all__ = ["AsyncGridKV", "GridKV", "TTL", "Value"]
