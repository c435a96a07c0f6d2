"""The QUIC transport for GridKV (aioquic).

This distribution is registered as the GridKV plugin ``quic`` (entry-point group
``gridkv.plugins``). It registers no backend yet: its implementation is a later issue, and
until then GridKV behaves exactly as if it were not installed.
"""

from __future__ import annotations

__all__: list[str] = []
