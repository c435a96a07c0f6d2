"""Clusters of real processes: each node a separate OS process, driven over a pipe.

``ProcessCluster`` starts nodes as ``python -m gridkv.testing.node_process`` processes on
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

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gridkv.base import errors
from gridkv.base.config import merged
from gridkv.security.identity import new_secret
from gridkv.testing.transports import tls_options

__all__ = ["NodeProcess", "NodeProcessError", "ProcessCluster"]

#: Options every process node gets unless the caller overrides them.
DEFAULT_OPTIONS: dict[str, Any] = {
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
                [sys.executable, "-m", "gridkv.testing.node_process", json.dumps(dict(options))],
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
    :param options: options every node gets (merged over :data:`DEFAULT_OPTIONS`). Peer
        authentication is on, as by default: unless they have an ``auth`` section or
        ``disable_auth``, the nodes share a fresh cluster secret (in :attr:`options`).
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
        options = options or {}
        trust = {} if "auth" in options or options.get("disable_auth") else _fresh_secret()
        self.options = merged(merged(DEFAULT_OPTIONS, trust), options)
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
        options = merged(
            self.options,
            {
                "local_node_id": f"{self.prefix}{index}",
                "local_address": address,
                "seed_addrs": seeds,
            },
        )
        network = options.get("network") or {}
        if network.get("type") == "quic" and not (network.get("ssl") or {}).get("cert_file"):
            # Mutual TLS: each node gets its certificate from this process's test CA.
            options = merged(options, {"network": {"ssl": tls_options(f"{self.prefix}{index}")}})
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


def _fresh_secret() -> dict[str, Any]:
    return {"auth": {"cluster_secret": new_secret()}}
