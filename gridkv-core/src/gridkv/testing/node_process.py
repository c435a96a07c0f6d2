"""The node process of a ProcessCluster: a GridKV node that runs what its parent sends.

Started as ``python -m gridkv.testing.node_process '<options as JSON>'``. It reads one JSON
command per line on stdin (``{"id": ..., "op": ..., "args": {...}}``), answers each with one
JSON line on stdout, reports every change in its membership view, and exits when its stdin
closes (its parent died), so no process outlives the test that started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

from gridkv.base import errors
from gridkv.plugins.hookspecs import hookimpl

__all__: list[str] = []


class _Child:
    """The node process: a GridKV node and the commands it runs."""

    def __init__(self, options: dict[str, Any]) -> None:
        from gridkv.plugins import Plugins

        self.options = options
        self.plugins = Plugins()
        self.plugins.register(self, name="gridkv-testing-cluster")
        #: (wall time, member id, old state, new state) of every change in this node's view.
        self.changes: list[tuple[float, str, str | None, str]] = []
        self._out: IO[bytes] = sys.stdout.buffer
        self.transport: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    @hookimpl
    def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
        """Record a change in this node's view."""
        self.changes.append((time.time(), member.node_id, old, new))

    async def run(self) -> None:
        from gridkv import AsyncGridKV, Options
        from gridkv.testing.faults import PartitionableTransport

        options = Options.from_mapping(self.options)
        inner = self.plugins.transport(options.network.type or "tcp")(options)
        self.transport = PartitionableTransport(inner, options.network.read_timeout)
        self.kv = AsyncGridKV(options, plugins=self.plugins, transport=self.transport)
        await self.kv.start()
        self._emit(
            {
                "event": "started",
                "address": self.kv.stats().network.local_address,
                "pid": os.getpid(),
            }
        )
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            while line := await reader.readline():
                command = json.loads(line)
                if command.get("op") == "close":
                    await self.kv.close()
                    self._answer(command, None)
                    return
                task = loop.create_task(self._run(command))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            await self.kv.close()

    def _emit(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message).encode() + b"\n")
        self._out.flush()

    def _answer(self, command: dict[str, Any], result: Any) -> None:
        self._emit({"id": command.get("id"), "ok": True, "result": result})

    async def _run(self, command: dict[str, Any]) -> None:
        try:
            op = command.pop("op")
            request_id = command.pop("id", None)
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise errors.InvalidArgument(f"unknown command {op!r}")
            result = await handler(**command)
        except Exception as exc:
            self._emit(
                {"id": request_id, "ok": False, "type": type(exc).__name__, "error": str(exc)}
            )
            return
        self._emit({"id": request_id, "ok": True, "result": result})

    # -- commands ------------------------------------------------------------------------

    async def op_ping(self) -> str:
        return self.kv.node_id

    async def op_wait_ready(self, timeout: float = 10.0) -> None:
        await self.kv.wait_ready(timeout=timeout)

    async def op_set(
        self, key: str, value: str, consistency: str | None = None, ttl: float | None = None
    ) -> None:
        await self.kv.set(key, value.encode(), ttl=ttl, consistency=consistency)

    async def op_get(self, key: str, consistency: str | None = None) -> str | None:
        value = await self.kv.get(key, consistency=consistency)
        return None if value is None else value.decode()

    async def op_delete(self, key: str, consistency: str | None = None) -> None:
        await self.kv.delete(key, consistency=consistency)

    @staticmethod
    async def _each_key(
        prefix: str, count: int, concurrency: int, step: Callable[[int, str], Awaitable[None]]
    ) -> dict[str, str]:
        """Run ``step(i, prefix{i})`` for i < count, ``concurrency`` at a time.

        Returns the GridKV errors by key.
        """
        failures: dict[str, str] = {}
        indexes = iter(range(count))

        async def worker() -> None:
            for i in indexes:
                key = f"{prefix}{i}"
                try:
                    await step(i, key)
                except errors.GridKVError as exc:
                    failures[key] = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return failures

    async def op_set_many(
        self, prefix: str, count: int, consistency: str | None = None, concurrency: int = 64
    ) -> dict[str, Any]:
        """Write ``prefix{i}`` = ``value-{i}`` for i < count.

        Returns how many were written and, for the others, the failures by key.
        """

        async def write(i: int, key: str) -> None:
            await self.kv.set(key, f"value-{i}".encode(), consistency=consistency)

        failures = await self._each_key(prefix, count, concurrency, write)
        return {"written": count - len(failures), "failures": failures}

    async def op_check_many(
        self, prefix: str, count: int, consistency: str | None = None, concurrency: int = 64
    ) -> dict[str, Any]:
        """Read ``prefix{i}`` for i < count; returns the keys missing or wrong, and errors."""
        missing: list[str] = []
        wrong: list[str] = []

        async def check(i: int, key: str) -> None:
            value = await self.kv.get(key, consistency=consistency)
            if value is None:
                missing.append(key)
            elif value != f"value-{i}".encode():
                wrong.append(key)

        failures = await self._each_key(prefix, count, concurrency, check)
        return {"missing": sorted(missing), "wrong": sorted(wrong), "failures": failures}

    async def op_lifecycles(
        self, prefix: str, duration: float, consistency: str = "quorum", seed: int = 0
    ) -> dict[str, Any]:
        """Key after key for ``duration`` seconds: written one to three times, then deleted.

        Operations on a key run one after the other, so what each key may end as is known:
        returns ``allowed`` (key -> the last acknowledged value and the failed ones after it,
        ``None`` for a delete) and counts of acknowledged deletes and writes and failures.
        """
        rng = random.Random(f"{seed}-{prefix}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        allowed: dict[str, list[str | None]] = {}
        counts = {"acked_deletes": 0, "acked_writes": 0, "failed": 0}
        n = 0
        while loop.time() < deadline:
            key = f"{prefix}{n}"
            n += 1
            ops: list[str | None] = [f"{key}/{i}" for i in range(rng.randint(1, 3))]
            for value in [*ops, None]:
                try:
                    if value is None:
                        await self.kv.delete(key, consistency=consistency)
                    else:
                        await self.kv.set(key, value.encode(), consistency=consistency)
                except errors.GridKVError:
                    allowed.setdefault(key, [None]).append(value)
                    counts["failed"] += 1
                else:
                    allowed[key] = [value]
                    counts["acked_deletes" if value is None else "acked_writes"] += 1
                await asyncio.sleep(rng.uniform(0.005, 0.02))
        return {"allowed": allowed, **counts}

    async def op_set_random(
        self, prefix: str, count: int, size: int, consistency: str | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Write ``prefix{i}`` = ``size`` incompressible bytes for i < count, 8 at a time.

        Returns how many were written and the failures by key.
        """
        noise = random.Random(seed).randbytes(2 * size)
        rng = random.Random(seed)
        starts = [rng.randrange(size) for _ in range(count)]

        async def write(i: int, key: str) -> None:
            value = noise[starts[i] : starts[i] + size]
            await self.kv.set(key, value, consistency=consistency)

        failures = await self._each_key(prefix, count, 8, write)
        return {"written": count - len(failures), "failures": failures}

    async def op_read_many(self, keys: list[str], consistency: str | None = None) -> dict[str, Any]:
        """The value of each key (``None`` when missing), and the errors by key."""
        values: dict[str, str | None] = {}
        failures: dict[str, str] = {}
        for key in keys:
            try:
                value = await self.kv.get(key, consistency=consistency)
            except errors.GridKVError as exc:
                failures[key] = f"{type(exc).__name__}: {exc}"
                continue
            values[key] = None if value is None else value.decode()
        return {"values": values, "failures": failures}

    async def op_local_missing(self, prefix: str, count: int) -> dict[str, Any]:
        """Of the keys ``prefix{i}`` this node is a replica of, those its storage lacks."""
        node = self.kv.node
        table = node.ensure_table()
        owned = 0
        missing: list[str] = []
        for i in range(count):
            key = f"{prefix}{i}"
            partition = table.partition_of(key)
            if node.node_id in table.owners(partition):
                owned += 1
                if node.storage.get(partition, key) is None:
                    missing.append(key)
        return {"owned": owned, "missing": missing}

    async def op_block(self, addresses: list[str]) -> None:
        """Cut this node off from ``addresses`` (what it sends there is dropped)."""
        self.transport.blocked = set(addresses)

    async def op_members(self) -> list[dict[str, Any]]:
        return [
            {"node_id": m.node_id, "address": m.address, "state": m.state}
            for m in self.kv.stats().cluster.members
        ]

    async def op_changes(self, member: str | None = None) -> list[list[Any]]:
        return [list(c) for c in self.changes if member is None or c[1] == member]

    async def op_stats(self) -> dict[str, Any]:
        return self.kv.stats().to_dict()

    async def op_metrics_address(self) -> str:
        """Where this node serves Prometheus text ("" when it does not)."""
        return str(getattr(self.kv.node._own_meters, "prometheus_address", ""))

    async def op_keys(self) -> int:
        return self.kv.stats().storage.keys

    async def op_singleflight(
        self, key: str, callers: int, start_at: float, loader_seconds: float, naive: bool = False
    ) -> dict[str, Any]:
        """``callers`` concurrent misses of ``key`` from wall time ``start_at`` on.

        Each caller uses ``get_or_set`` with a loader that takes ``loader_seconds`` (or, with
        ``naive``, get, load on a miss, set: the pattern without singleflight). Returns how
        many times the loader ran here, and the values the callers got (distinct).
        """
        loads = 0

        async def loader() -> bytes:
            nonlocal loads
            loads += 1
            await asyncio.sleep(loader_seconds)
            return f"loaded by {self.kv.node_id}".encode()

        async def call() -> bytes:
            if not naive:
                return await self.kv.get_or_set(key, loader, ttl=60)
            value = await self.kv.get(key)
            if value is None:
                value = await loader()
                await self.kv.set(key, value, ttl=60)
            return value

        await asyncio.sleep(max(0.0, start_at - time.time()))
        values = await asyncio.gather(*(call() for _ in range(callers)))
        return {"loads": loads, "values": sorted({v.decode() for v in values})}

    async def op_owners(self, key: str) -> list[str]:
        """The replicas of ``key`` in this node's table, primary first."""
        table = self.kv.node.ensure_table()
        return list(table.owners(table.partition_of(key)))

    async def op_hot_reads(
        self, key: str, rate: int, duration: float, start_at: float
    ) -> dict[str, Any]:
        """Read ``key`` ``rate`` times a second for ``duration`` seconds from ``start_at``.

        Paced in 10 ms slices, as a service's requests arrive. Returns the reads made, the
        values read (distinct) and the CPU seconds this process used meanwhile.
        """
        await asyncio.sleep(max(0.0, start_at - time.time()))
        loop = asyncio.get_running_loop()
        cpu = time.process_time()
        begin = loop.time()
        per_slice = max(1, rate // 100)
        reads = 0
        seen: set[bytes | None] = set()
        while (now := loop.time()) < begin + duration:
            for _ in range(per_slice):
                seen.add(await self.kv.get(key))
                reads += 1
            await asyncio.sleep(max(0.0, begin + reads / rate - loop.time()))
        return {
            "reads": reads,
            "values": sorted(v.decode() if v else "" for v in seen),
            "cpu_seconds": time.process_time() - cpu,
            "seconds": now - begin,
        }

    async def op_load(
        self,
        duration: float,
        tasks: int = 64,
        keys: int = 10_000,
        read_ratio: float = 0.9,
        value_bytes: int = 100,
        seed: int = 0,
        consistency: str | None = None,
        big_ratio: float = 0.0,
        big_bytes: tuple[int, int] = (100_000, 1_000_000),
    ) -> dict[str, Any]:
        """Run a get/set mix from ``tasks`` concurrent tasks for ``duration`` seconds.

        A ``big_ratio`` of the sets write an incompressible value of ``big_bytes`` (a range);
        the rest write ``value_bytes``. Each task yields to the loop after each operation, as
        an application awaits other I/O between cache calls (an operation served here never
        yields by itself, and a loop that never runs replicates nothing). Returns operation
        counts, errors by type, every latency in nanoseconds (gets and sets apart), and the
        replication backlog (bytes not yet acknowledged by the replicas) when time ran out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        value = b"v" * value_bytes
        noise = random.Random(seed).randbytes(2 * big_bytes[1]) if big_ratio else b""
        latencies: dict[str, list[int]] = {"get": [], "set": []}  # nanoseconds
        counts = {"get": 0, "set": 0}
        failures: dict[str, int] = {}
        clock = time.perf_counter_ns

        async def worker(n: int) -> None:
            rng = random.Random(f"{seed}-{self.kv.node_id}-{n}")
            kv = self.kv
            while loop.time() < deadline:
                key = f"load:{rng.randrange(keys)}"
                kind = "get" if rng.random() < read_ratio else "set"
                start = clock()
                try:
                    if kind == "get":
                        await kv.get(key, consistency=consistency)
                    elif big_ratio and rng.random() < big_ratio:
                        size = rng.randint(*big_bytes)
                        at = rng.randrange(len(noise) - size)
                        await kv.set(key, noise[at : at + size], consistency=consistency)
                    else:
                        await kv.set(key, value, consistency=consistency)
                except errors.GridKVError as exc:
                    name = type(exc).__name__
                    failures[name] = failures.get(name, 0) + 1
                    continue
                counts[kind] += 1
                latencies[kind].append(clock() - start)
                await asyncio.sleep(0)

        started = loop.time()
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        backlog = self.kv.node.coordinator.batcher.backlog
        return {
            "seconds": loop.time() - started,
            "counts": counts,
            "failures": failures,
            "latencies_ns": latencies,
            "backlog_bytes": sum(backlog.values()),
        }


def _child_main(argv: list[str]) -> int:
    from gridkv.base.eventloop import run

    child = _Child(json.loads(argv[0]))
    try:
        run(child.run())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
