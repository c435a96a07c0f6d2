"""The RESP door: Redis's protocol (RESP2 and RESP3) in front of a GridKV node.

``gridkv node --resp HOST:PORT`` (or ``resp.listen``) opens it; redis-cli, redis-py and every
Redis client then read and write the cluster through any node. ``docs/resp.md`` lists the
commands, their consistency and their cost.
"""

from __future__ import annotations

from gridkv.service.resp.server import RespServer

__all__ = ["RespServer"]
