"""A slow loader behind a cluster-wide cache: @cached and get_or_set across three nodes.

Three nodes in one process (the memory transport, as three services on three hosts would be
over TCP). 300 requests arrive at once on all three for the same report; the loader runs once
in the cluster and everyone gets its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import gridkv
from gridkv.testing.memory_cluster import start_memory_cluster

loads = 0


async def main() -> None:
    nodes = await start_memory_cluster("svc", 3, replica_count=2)
    try:

        def service(kv: gridkv.AsyncGridKV) -> Callable[[str], Awaitable[dict[str, object]]]:
            @kv.cached(ttl=300, key="report:{0}")
            async def report(day: str) -> dict[str, object]:
                global loads
                loads += 1
                await asyncio.sleep(0.2)  # the slow query
                return {"day": day, "orders": 1234}

            return report

        reports = [service(kv) for kv in nodes]
        answers = await asyncio.gather(*(r("2026-11-30") for r in reports for _ in range(100)))
        print(f"{len(answers)} requests on 3 nodes, the loader ran {loads} time(s)")
        print(f"every answer alike: {all(a == answers[0] for a in answers)}")

        # get_or_set with bytes, and a loader that fails: the callers waiting get LoaderFailed.
        async def broken() -> bytes:
            raise ConnectionError("database down")

        try:
            await nodes[0].get_or_set("config", broken)
        except ConnectionError as exc:
            print(f"the loader's own caller got: {exc}")
        print(await nodes[1].get_or_set("config", lambda: b"fallback"))
    finally:
        for kv in nodes:
            await kv.close()


if __name__ == "__main__":
    asyncio.run(main())
