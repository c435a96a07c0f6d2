"""Where a sequential round trip's time goes: CPU per call on each side, against Redis.

One client thread makes ``--ops`` sequential calls of each kind, and the script reads the CPU
time that thread spent and the CPU time the server process spent (``/proc``, user + system)
over them:

* redis-py (hiredis) GET against a ``redis-server``;
* a minimal asyncio server in another process (a ``Protocol`` that writes back what it
  reads) with a plain blocking socket client: the floor of any asyncio owner and of any
  Python client;
* ``GridKV.get`` of a key the other node owns, over TCP with peer authentication (the
  direct path of :mod:`gridkv.api.direct`), against that node's process.

A round trip's wall time is about the two sides' CPU time added (they take turns). The
figures tell how far each side is from its floor.

    python bench/latency_floor.py [--ops N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import cast

import redis
from _common import server_process, write
from gridkv import GridKV
from gridkv.base.eventloop import run
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port
from vs_redis import VALUE, node_options, redis_server, split_keys

_TICK = os.sysconf("SC_CLK_TCK")
ECHO_BYTES = 150  # about a GridKV get request or reply, sealed


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def measure(call: Callable[[], object], server_pid: int, ops: int) -> dict[str, float]:
    """p50 wall time, and CPU per call of this thread and of the server, in microseconds."""
    for _ in range(min(ops, 500)):
        call()
    clock = time.perf_counter_ns
    samples = []
    server_before, thread_before = process_cpu(server_pid), time.thread_time()
    for _ in range(ops):
        start = clock()
        call()
        samples.append(clock() - start)
    thread_cpu = time.thread_time() - thread_before
    server_cpu = process_cpu(server_pid) - server_before
    return {
        "p50_us": statistics.median(samples) / 1000,
        "client_cpu_us": thread_cpu / ops * 1e6,
        "server_cpu_us": server_cpu / ops * 1e6,
    }


async def echo_server(port: int) -> None:
    """A minimal asyncio server on ``port`` until standard input closes."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def echo_call(port: int) -> Callable[[], object]:
    """One round trip of ECHO_BYTES over a blocking socket to the echo server."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = b"x" * ECHO_BYTES

    def call() -> None:
        sock.sendall(message)
        got = 0
        while got < ECHO_BYTES:
            got += len(sock.recv(65536))

    return call


def main() -> None:
    """Print the table and write ``bench/results/latency_floor.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        run(echo_server(args.echo))  # on the loop GridKV's nodes run on (uvloop if installed)
        return
    figures: dict[str, dict[str, float]] = {}
    with redis_server() as redis_port:
        client = redis.Redis(port=redis_port)
        client.set("k", VALUE)
        pid = int(client.info("server")["process_id"])
        figures["redis-py GET -> redis-server"] = measure(lambda: client.get("k"), pid, args.ops)
        client.close()
    echo_port = free_port()
    with server_process(__file__, "--echo", str(echo_port)) as echo:
        figures["socket -> asyncio echo"] = measure(echo_call(echo_port), echo.pid, args.ops)
    secret = new_secret()
    port, far_port = free_port(), free_port()
    seed = f"127.0.0.1:{port}"
    vs_redis = os.path.join(os.path.dirname(__file__), "vs_redis.py")
    with (
        GridKV(node_options("near", port, secret, [])) as kv,
        server_process(vs_redis, "--serve", str(far_port), secret, seed) as far,
    ):
        kv.wait_ready(timeout=30)
        remote, _ = split_keys(kv, args.ops)
        for key in remote:
            kv.set(key, VALUE)
        keys = iter(remote * 3)
        figures["GridKV.get remote -> owner"] = measure(
            lambda: kv.get(next(keys)), far.pid, args.ops
        )
    print(f"{'round trip':<32}{'p50 us':>9}{'client cpu':>12}{'server cpu':>12}")
    for name, fig in figures.items():
        print(
            f"{name:<32}{fig['p50_us']:>9.1f}{fig['client_cpu_us']:>12.1f}"
            f"{fig['server_cpu_us']:>12.1f}"
        )
    path = write("latency_floor", {"ops": args.ops, "figures": figures})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
