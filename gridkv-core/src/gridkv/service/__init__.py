"""What `gridkv node` serves besides the node: the RESP door and health probes."""

from __future__ import annotations

from gridkv.service.health import HealthServer

__all__ = ["HealthServer"]
