"""Three ``gridkv node`` processes with their RESP doors, reached by redis-py (sync and asyncio)
and redis-cli: what one door writes the others read, atomic commands stay atomic across doors,
cluster-wide commands gather every node, and SIGTERM loses no acknowledged write.

The memory transport does not cross processes, so its run skips these. redis-cli comes from
Debian's redis-tools, which the nox ``tests`` session installs when it is missing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import yaml
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port, network_options, transport_under_test
from redis.backoff import NoBackoff
from redis.retry import Retry

TRANSPORT = transport_under_test()
pytestmark = pytest.mark.skipif(
    TRANSPORT == "memory", reason="the memory transport does not cross processes"
)


class DoorNode:
    """One ``gridkv node --resp`` process."""

    def __init__(self, directory: Path, node_id: str, config: dict[str, Any]) -> None:
        self.node_id = node_id
        self.door_port = free_port()
        self.config = {**config, "resp": {"listen": f"127.0.0.1:{self.door_port}"}}
        path = directory / f"{node_id}.yaml"
        path.write_text(yaml.safe_dump(self.config))
        self.log = directory / f"{node_id}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gridkv.cli", "node", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GRIDKV_LOG__NO_TIME": "true"},
            )

    def client(self, **options: Any) -> redis.Redis:
        """A sync redis-py client of this node's door."""
        return redis.Redis(port=self.door_port, retry=Retry(NoBackoff(), 0), **options)

    def ready(self, members: int) -> bool:
        """Whether the node answers on its door, ready, with ``members`` members alive."""
        try:
            with self.client(socket_timeout=2) as client:
                info = client.info("gridkv")
        except redis.RedisError:
            return False
        return bool(info.get("cluster_ready")) and info.get("members_alive") == members

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)


def _wait(what: str, condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(directory: Path, count: int = 3) -> list[DoorNode]:
    """``count`` nodes with doors, ready and seeing one another.

    A port picked free can be taken before the node listens on it (by another process's
    outgoing connection, say): a node that exits because its address is in use is started
    again on other ports, twice at most, the whole cluster when it is the seed.
    """
    secret = new_secret()
    for attempt in (1, 2, 3):
        ports = [free_port() for _ in range(count)]
        nodes = []
        for i in range(count):
            node_id = f"door{i}"
            config = {
                "local_node_id": node_id,
                "local_address": f"127.0.0.1:{ports[i]}",
                "seed_addrs": [f"127.0.0.1:{ports[0]}"] if i else [],
                "replica_count": 2,
                "network": network_options(node_id),
                "auth": {"cluster_secret": secret},
            }
            if TRANSPORT == "memory":  # (skipped; keeps the config valid)
                config["network"] = {"type": "tcp"}
            nodes.append(DoorNode(directory, node_id, config))
        try:
            _wait("every node ready", functools.partial(_all_ready, nodes, count))
            return nodes
        except _PortTaken:
            for node in nodes:
                node.stop(signal.SIGKILL)
            if attempt == 3:
                raise
        except AssertionError as exc:  # say what each node logged
            for node in nodes:
                node.stop(signal.SIGKILL)
            logs = "\n".join(f"--- {n.node_id}:\n{n.log.read_text()[-3000:]}" for n in nodes)
            raise AssertionError(f"{exc}\n{logs}") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    """A node could not listen: its port was taken meanwhile."""


def _all_ready(nodes: list[DoorNode], count: int) -> bool:
    return all([_ready_or_dead(node, count) for node in nodes])  # every node looked at


def _ready_or_dead(node: DoorNode, count: int) -> bool:
    if node.process.poll() is not None:
        log = node.log.read_text()
        if "in use" in log:
            raise _PortTaken(log)
        raise AssertionError(f"{node.node_id} exited:\n{log}")
    return node.ready(count)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DoorNode]]:
    nodes = _start(tmp_path_factory.mktemp("doors"))
    try:
        yield nodes
    finally:
        for node in nodes:
            assert node.stop() == 0, node.log.read_text()


def test_what_one_door_writes_the_others_read(cluster: list[DoorNode]) -> None:
    a, b, c = (node.client() for node in cluster)
    for i in range(200):
        assert a.set(f"user:{i}", f"value-{i}") is True
    for reader in (b, c):
        assert reader.mget([f"user:{i}" for i in range(200)]) == [
            f"value-{i}".encode() for i in range(200)
        ]
    assert a.set("ttl", "v", ex=100) is True
    assert 99 <= b.ttl("ttl") <= 100
    assert c.set("ttl", "w", nx=True) is None
    assert c.set("ttl", "w", xx=True, get=True) == b"v"
    assert a.get("ttl") == b"w"
    assert b.getrange("user:7", -1, -1) == b"7"
    assert c.delete("user:0", "user:1", "nope") == 2
    assert a.exists("user:0", "user:2") == 1
    for client in (a, b, c):
        client.close()


def test_counters_stay_atomic_across_doors(cluster: list[DoorNode]) -> None:
    cluster[0].client().set("hits", 0)
    errors: list[BaseException] = []

    def hammer(node: DoorNode) -> None:
        try:
            with node.client() as client:
                for _ in range(150):
                    client.incr("hits")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(node,)) for node in cluster]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for node in cluster:
        assert node.client().get("hits") == b"450"
    client = cluster[1].client()
    client.set("max", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="^increment or decrement would overflow$"):
        cluster[2].client().incr("max")
    assert client.append("max", "x") == 20
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        cluster[0].client().incr("max")


def test_cluster_wide_commands_gather_every_node(cluster: list[DoorNode]) -> None:
    writer = cluster[2].client()
    writer.flushall()
    keys = {f"scan:{i}".encode() for i in range(500)}
    for start in range(0, 500, 100):
        writer.mset({f"scan:{i}": "v" for i in range(start, start + 100)})
    for node in cluster:
        client = node.client()
        seen: list[Any] = []
        cursor = 0
        while True:
            cursor, batch = client.scan(cursor, match="scan:*", count=50)
            seen += batch
            if cursor == 0:
                break
        assert sorted(seen) == sorted(keys)  # every key once, though two nodes hold each
        assert client.dbsize() == 500
        assert len(client.keys("scan:1?")) == 10
        assert client.randomkey() in keys
        assert client.info("keyspace")["db0"]["keys"] == 500
    assert cluster[0].client().flushall() is True
    assert cluster[1].client().dbsize() == 0


def test_the_asyncio_client_pipelines_through_any_door(cluster: list[DoorNode]) -> None:
    async def run() -> list[Any]:
        client = aredis.Redis(port=cluster[1].door_port, protocol=3)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for i in range(300):
                    pipe.set(f"pipe:{i}", i)
                    pipe.incrby(f"pipe:{i}", 10)
                    pipe.get(f"pipe:{i}")
                    if i % 50 == 49:  # a command on many keys sees every one before it
                        pipe.mget([f"pipe:{j}" for j in range(i + 1)])
                return await pipe.execute()
        finally:
            await client.aclose()

    results = asyncio.run(run())
    # Commands on different keys wait together; each key's commands keep their order.
    singles = [r for r in results if not isinstance(r, list)]
    assert singles[1::3] == [i + 10 for i in range(300)]
    assert singles[2::3] == [str(i + 10).encode() for i in range(300)]
    lists = [r for r in results if isinstance(r, list)]
    assert lists == [[str(j + 10).encode() for j in range(i + 1)] for i in range(49, 300, 50)]
    assert cluster[2].client().get("pipe:299") == b"309"


def test_redis_cli_reads_and_writes_the_cluster(cluster: list[DoorNode]) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (nox's tests session installs redis-tools)")

    def run(node: DoorNode, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [cli, "-p", str(node.door_port), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    assert run(cluster[0], "SET", "cli:key", "hello world") == "OK\n"
    assert run(cluster[1], "GET", "cli:key") == "hello world\n"
    assert run(cluster[2], "INCRBY", "cli:n", "41") == "41\n"
    assert run(cluster[0], "INCR", "cli:n") == "42\n"
    # (redis-cli prints an error and an empty line)
    assert run(cluster[1], "NOSUCH", "x").strip("\n") == (
        "ERR unknown command 'NOSUCH', with args beginning with: 'x' "
    )
    assert set(run(cluster[2], "--scan", "--pattern", "cli:*").split()) == {"cli:key", "cli:n"}
    assert run(cluster[0], "PING") == "PONG\n"
    # Commands on stdin, one a line, as a script would send them.
    out = run(cluster[1], stdin="SET cli:a 1\nAPPEND cli:a 23\nGET cli:a\nDEL cli:a\n")
    assert out.split() == ["OK", "3", "123", "1"]


def test_gridkv_status_shows_every_member(cluster: list[DoorNode]) -> None:
    cluster[0].client().mset({f"status:{i}": "v" for i in range(100)})
    command = [sys.executable, "-m", "gridkv.cli", "status", "--addr"]
    seen: list[dict[str, Any]] = []

    def consistent() -> bool:
        """Each partition has two replicas and one primary, in the figures of all three."""
        done = subprocess.run(
            [*command, f"127.0.0.1:{cluster[1].door_port}", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        status = json.loads(done.stdout)
        seen.append(status)
        members = {m["node_id"]: m for m in status["members"]}
        count = status["partition_count"]
        return (
            set(members) == {"door0", "door1", "door2"}
            and all(m["state"] == "alive" and m["ready"] for m in members.values())
            and sum(m["partitions"] for m in members.values()) == 2 * count
            and sum(m["primaries"] for m in members.values()) == count
        )

    # Each node reports by its own view, which a busy machine may leave unsettled a moment.
    _wait("consistent figures", consistent, timeout=20)
    members = {m["node_id"]: m for m in seen[-1]["members"]}
    assert sum(m["keys"] for m in members.values()) >= 100
    table = subprocess.run(
        [*command, f"127.0.0.1:{cluster[2].door_port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert all(node.node_id in table for node in cluster) and "alive" in table


def test_malformed_input_leaves_the_node_serving(cluster: list[DoorNode]) -> None:
    import socket

    for junk in (b"*1\r\n$-7\r\n", b"\x00\xff" * 1000 + b"\r\n", b"*99999999999\r\n"):
        with socket.create_connection(("127.0.0.1", cluster[0].door_port), timeout=5) as sock:
            sock.sendall(junk)
            reply = sock.recv(4096)
            assert reply.startswith(b"-ERR"), reply
    assert cluster[0].client().ping() is True


def test_sigterm_loses_no_acknowledged_write(tmp_path: Path) -> None:
    nodes = _start(tmp_path)
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        client = nodes[2].client(socket_timeout=10)
        i = 0
        while not stop.is_set():
            try:
                client.set(f"w:{i}", str(i))
            except redis.RedisError:
                return  # the door closed: nothing after this was acknowledged
            acknowledged.append(i)
            i += 1

    writer = threading.Thread(target=write)
    try:
        writer.start()
        _wait("some writes", lambda: len(acknowledged) >= 300)
        assert nodes[2].stop(signal.SIGTERM) == 0, nodes[2].log.read_text()
        stop.set()
        writer.join(30)
        reader = nodes[0].client()
        _wait("two members left", lambda: nodes[0].ready(2), timeout=30)
        keys = [f"w:{i}" for i in acknowledged]
        values = []
        for start in range(0, len(keys), 500):
            values += reader.mget(keys[start : start + 500])
        missing = [k for k, v in zip(keys, values, strict=True) if v is None]
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    finally:
        stop.set()
        for node in nodes:
            node.stop()
