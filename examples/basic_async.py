"""The smallest asyncio program: one embedded node, set, get, delete, stats."""

from __future__ import annotations

import asyncio

import gridkv


async def main() -> None:
    async with gridkv.AsyncGridKV(
        local_node_id="example-1", local_address="example-1:7946", network={"type": "memory"}
    ) as kv:
        await kv.wait_ready(timeout=10)
        await kv.set("user:1", b"alice", ttl=60)
        print(await kv.get("user:1"))
        await kv.delete("user:1")
        print(await kv.get("user:1"))
        print(kv.stats().format_table())


if __name__ == "__main__":
    asyncio.run(main())
