"""Clusters of real processes: each node a separate OS process, driven over a pipe.

:class:`ProcessCluster` starts nodes as ``python -m gridkv.testing.cluster`` processes on
127.0.0.1 (free ports, picked by the kernel), tells each what to do through one JSON line per
command on its stdin, and reads one JSON line per answer from its stdout. Tests write and read
through any node, ``kill -9`` one by PID, restart it on the same id and address, and read what
each node sees; benchmarks run a load inside each process. Every process is stopped by its PID
when the cluster closes, and a process whose stdin closes (its parent died) exits by itself,
so none is left behind.

The network transport is whatever the options name (``"tcp"`` by default here); the node in
the process runs on :func:`gridkv.base.eventloop.run`, so on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from gridkv.base import errors
from gridkv.plugins.hookspecs import hookimpl

__all__ = ["NodeProcess", "NodeProcessError", "ProcessCluster"]

#: Options every process node gets unless the caller overrides them.
DEFAULT_OPTIONS: dict[str, Any] = {
    "disable_auth": True,  # loopback only; authentication arrives with its own issue
    "network": {"type": "tcp"},
    "log": {"level": "warning", "format": "json"},
}


class NodeProcessError(errors.GridKVError):
    """A node process could not be started, died, or did not answer a command in time."""


# -- the parent's side -------------------------------------------------------------------------


class NodeProcess:
    """One node running in a child process, and the pipe to command it.

    Build with :meth:`spawn`. :meth:`call` sends a command and returns its result; a GridKV
    error raised in the child is raised again here as the same class.
    """

    def __init__(self, proc: subprocess.Popen[bytes], node_id: str, log_path: Path) -> None:
        self.proc = proc
        self.node_id = node_id
        self.log_path = log_path
        #: The address the node listens on, known once it started.
        self.address = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._started: Future[dict[str, Any]] = Future()
        self._lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._read, name=f"gridkv-proc-{node_id}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    @classmethod
    def spawn(
        cls, options: Mapping[str, Any], log_dir: Path, *, start_timeout: float = 30.0
    ) -> NodeProcess:
        """Start a node process with ``options`` and wait until it listens.

        :raises NodeProcessError: it exited or did not start in time; the message has the end
            of its log.
        """
        node_id = str(options["local_node_id"])
        log_path = log_dir / f"{node_id}.log"
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gridkv.testing.cluster", json.dumps(dict(options))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        node = cls(proc, node_id, log_path)
        try:
            started = node._started.result(start_timeout)
        except Exception as exc:
            node.kill()
            raise NodeProcessError(
                f"node process {node_id!r} (pid {proc.pid}) did not start: {exc}\n{node.log_tail()}"
            ) from None
        node.address = started["address"]
        return node

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("event") == "started":
                self._started.set_result(message)
                continue
            with self._lock:
                future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
        gone = NodeProcessError(f"node process {self.node_id!r} (pid {self.pid}) exited")
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in [*pending.values(), self._started]:
            if not future.done():
                future.set_exception(gone)

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        """Run command ``op`` in the node and return its result.

        :raises GridKVError: the command failed in the node (the node's exception class).
        :raises NodeProcessError: the process died or did not answer within ``timeout``.
        """
        future: Future[Any] = Future()
        with self._lock:
            request_id = next(self._ids)
            self._pending[request_id] = future
        stdin = self.proc.stdin
        try:
            assert stdin is not None
            stdin.write(json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n")
            stdin.flush()
            answer = future.result(timeout)
        except (OSError, ValueError):
            raise NodeProcessError(
                f"node process {self.node_id!r} (pid {self.pid}) is not running"
            ) from None
        except TimeoutError:
            raise NodeProcessError(
                f"node process {self.node_id!r} did not answer {op!r} within {timeout:g}s"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        if not answer["ok"]:
            kind = getattr(errors, answer["type"], None)
            if isinstance(kind, type) and issubclass(kind, errors.GridKVError):
                raise kind(answer["error"])
            raise NodeProcessError(f"{answer['type']}: {answer['error']}")
        return answer["result"]

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the process (by its PID) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def stop(self, timeout: float = 15.0) -> None:
        """Close the node gracefully (it hands its data over) and reap the process.

        A process that does not exit within ``timeout`` is killed.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(errors.GridKVError):
                self.call("close", timeout=timeout)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._reader.join(5)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's log (stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessCluster:
    """``count`` nodes in separate processes on 127.0.0.1, joined through the first ones.

    Use as a context manager; leaving it stops every process it started (by PID), gracefully
    when possible and with ``kill -9`` otherwise.

    :param count: nodes to start.
    :param options: options every node gets (merged over :data:`DEFAULT_OPTIONS`).
    :param log_dir: where each node's log goes; a temporary directory when ``None``.
    :param prefix: node ids are ``f"{prefix}{i}"``.
    """

    def __init__(
        self,
        count: int,
        options: Mapping[str, Any] | None = None,
        *,
        log_dir: Path | None = None,
        prefix: str = "p",
    ) -> None:
        self.count = count
        self.options = _merge(DEFAULT_OPTIONS, options or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gridkv-cluster-")
            log_dir = Path(self._tmp.name)
        self.log_dir = log_dir
        self.prefix = prefix
        #: The node processes by index; ``None`` for one that was killed and not restarted.
        self.nodes: list[NodeProcess | None] = []
        self._addresses: list[str] = []
        self._all: list[NodeProcess] = []

    def __enter__(self) -> Self:
        try:
            for i in range(self.count):
                node = self._spawn(i, "127.0.0.1:0")
                self.nodes.append(node)
                self._addresses.append(node.address)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, index: int, address: str) -> NodeProcess:
        seeds = [a for j, a in enumerate(self._addresses) if j != index][:3]
        options = _merge(
            self.options,
            {
                "local_node_id": f"{self.prefix}{index}",
                "local_address": address,
                "seed_addrs": seeds,
            },
        )
        node = NodeProcess.spawn(options, self.log_dir)
        self._all.append(node)
        return node

    def node(self, index: int) -> NodeProcess:
        """The running node at ``index``.

        :raises NodeProcessError: it was killed and not restarted.
        """
        node = self.nodes[index]
        if node is None:
            raise NodeProcessError(f"node {self.prefix}{index} is not running")
        return node

    def live(self) -> Iterator[NodeProcess]:
        """The running nodes."""
        return (n for n in self.nodes if n is not None)

    def kill(self, index: int) -> float:
        """``kill -9`` node ``index``; returns the wall-clock time just before the signal."""
        node = self.node(index)
        at = time.time()
        node.kill()
        self.nodes[index] = None
        return at

    def restart(self, index: int) -> NodeProcess:
        """Start node ``index`` again with the same id and address."""
        if self.nodes[index] is not None:
            raise NodeProcessError(f"node {self.prefix}{index} is still running")
        node = self._spawn(index, self._addresses[index])
        self.nodes[index] = node
        return node

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05
    ) -> None:
        """Poll ``check()`` until it is true.

        :raises NodeProcessError: not true within ``timeout``, naming ``what`` and the logs.
        """
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.node_id}\n{n.log_tail(10)}" for n in self.live())
                raise NodeProcessError(f"{what}: not reached within {timeout:g}s\n{logs}")
            time.sleep(interval)

    def views(self) -> dict[str, dict[str, str]]:
        """Each running node's view: node id -> {member id: state}."""
        return {
            n.node_id: {m["node_id"]: m["state"] for m in n.call("members")} for n in self.live()
        }

    def converged(self, expect: Mapping[str, str]) -> bool:
        """True when every running node sees exactly the states in ``expect`` for those ids."""
        for view in self.views().values():
            if any(view.get(member) != state for member, state in expect.items()):
                return False
        return True

    def close(self) -> None:
        """Stop every process started, gracefully when possible; idempotent."""
        live = [n for n in self._all if n.alive()]
        threads = [threading.Thread(target=n.stop, daemon=True) for n in live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for node in self._all:
            node.kill()  # reaps it; a no-op signal for one that exited
        self.nodes = [None] * len(self.nodes)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def partition(self, *groups: list[int]) -> None:
        """Cut the network between the groups of node indexes (both directions).

        Nodes in no group keep every link; a later call replaces the cuts.
        """
        for i, group in enumerate(groups):
            cut = [self._addresses[j] for other in groups[:i] + groups[i + 1 :] for j in other]
            for index in group:
                node = self.nodes[index]
                if node is not None:
                    node.call("block", addresses=cut)

    def heal(self) -> None:
        """Restore every link cut by :meth:`partition`."""
        for node in self.live():
            node.call("block", addresses=[])

    def pids(self) -> list[int]:
        """PIDs of every process this cluster started, running or not."""
        return [n.pid for n in self._all]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# -- the child's side --------------------------------------------------------------------------


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

    async def op_keys(self) -> int:
        return self.kv.stats().storage.keys

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
        the rest write ``value_bytes``. Returns operation counts, errors by type, and every
        latency in nanoseconds (gets and sets apart).
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

        started = loop.time()
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        return {
            "seconds": loop.time() - started,
            "counts": counts,
            "failures": failures,
            "latencies_ns": latencies,
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
