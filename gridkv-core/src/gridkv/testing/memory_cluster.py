"""A cluster of nodes in one process on the memory transport, started and joined.

For tests of the API against several nodes: real nodes, a real (in-process) network, no
sockets. Authentication is off unless ``options`` says otherwise.
"""

from __future__ import annotations

from typing import Any

from gridkv.api.aio import AsyncGridKV
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

__all__ = ["start_memory_cluster"]


async def start_memory_cluster(
    prefix: str, count: int = 3, net: MemoryNetwork | None = None, **options: Any
) -> list[AsyncGridKV]:
    """``count`` started nodes ``<prefix>0``, ``<prefix>1``... joined through the first.

    Returns once every node is ready and sees all the others. ``options`` go to each node
    (``replica_count`` and the rest); close the nodes when done.
    """
    net = net or MemoryNetwork()
    names = [f"{prefix}{i}:1" for i in range(count)]
    options = {"disable_auth": True, **options}
    nodes = [
        AsyncGridKV(
            local_node_id=name.split(":")[0],
            local_address=name,
            seed_addrs=[names[0]] if i else [],
            transport=MemoryTransport(name, net, timeout=0.5),
            **options,
        )
        for i, name in enumerate(names)
    ]
    for kv in nodes:
        await kv.start()
    for kv in nodes:
        await kv.wait_ready(timeout=10)
    await wait_until(lambda: all(len(kv.stats().cluster.members) == count for kv in nodes), 10)
    return nodes
