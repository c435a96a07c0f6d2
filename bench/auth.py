"""What peer authentication costs: requests between nodes, a 3-process cluster, a handshake.

* Requests: a node in another process answers ``Ping`` messages sent through the messaging
  port (encode, seal, TCP, open, decode, route, and back) from 50 tasks, with authentication
  off (``disable_auth``), on (``ed25519``: AES-GCM tags on every frame) and on with
  ``auth.encrypt``; the three alternate, ``--rounds`` times each, and the best round of each
  counts.
* Cluster: the 3-process mix of ``bench/cluster_tcp.py`` where two thirds of the operations
  cross TCP (``replica_count`` 1, no hot cache), in the same three modes.
* Handshake: the first request on a new connection (dial, handshake: both signatures, both
  checks, the key exchange; then the request) in each mode; the difference to ``off`` is what
  the handshake costs per connection.

Targets (issue 11): with tags at least 0.85x of authentication off, with encryption at least
0.75x.

    python bench/auth.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from _common import percentile, server_process, write
from cluster_tcp import cluster_mix
from gridkv import AsyncGridKV, Options
from gridkv.base.eventloop import loop_name, run
from gridkv.node.messaging import MessagingPort
from gridkv.plugins import get_plugins
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port
from gridkv.wire.messages import Ping, Pong
from gridkv_transport_tcp.transport import TcpTransport

CLIENTS = 50
SECRET = new_secret()
MODES: dict[str, dict[str, Any]] = {
    "off": {"disable_auth": True},
    "ed25519": {"auth": {"cluster_secret": SECRET}},
    "ed25519+encrypt": {"auth": {"cluster_secret": SECRET, "encrypt": True}},
}


def mode_options(mode: str, node_id: str, address: str) -> Options:
    """Options of a node (or the bench's client) in ``mode``."""
    return Options.from_mapping(
        {
            "local_node_id": node_id,
            "local_address": address,
            "network": {"type": "tcp"},
            "log": {"level": "error"},
            **MODES[mode],
        }
    )


async def serve(mode: str, port: int, secret: str) -> None:
    """Run a node in ``mode`` on ``port`` until stdin closes."""
    MODES["ed25519"]["auth"]["cluster_secret"] = secret
    MODES["ed25519+encrypt"]["auth"]["cluster_secret"] = secret
    async with AsyncGridKV(mode_options(mode, "server", f"127.0.0.1:{port}")):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def connect(mode: str, target: str) -> tuple[TcpTransport, MessagingPort]:
    """A client transport and messaging port in ``mode`` (the handshake on its connections)."""
    options = mode_options(mode, "client", f"127.0.0.1:{free_port()}")
    authenticator = get_plugins().authenticator("none" if mode == "off" else "ed25519")(
        options, clock=time.time
    )
    transport = TcpTransport(options.local_address)
    port = MessagingPort(transport, authenticator, options.network.max_frame_bytes)
    port.guarded = await transport.start(
        lambda peer, frame, sender: None, authenticator.handshake(lambda address: None)
    )
    return transport, port


async def first_request_ms(mode: str, target: str, count: int = 50) -> float:
    """The mean time of a first request on a new connection (dial, handshake, request)."""
    total = 0.0
    for _ in range(count):
        transport, port = await connect(mode, target)
        started = time.perf_counter()
        await port.request(target, Ping(0, "client"))
        total += time.perf_counter() - started
        await transport.close()
    return total / count * 1000


async def drive(mode: str, target: str, seconds: float) -> dict[str, Any]:
    """Ping round trips through a messaging port from CLIENTS tasks for ``seconds``."""
    loop = asyncio.get_running_loop()
    first_ms = await first_request_ms(mode, target)
    transport, port = await connect(mode, target)
    for i in range(2000):  # warm up
        await port.request(target, Ping(i, "client"))
    latencies: list[int] = []
    deadline = loop.time() + seconds
    clock = time.perf_counter_ns

    async def worker(n: int) -> None:
        seq = n << 32
        while loop.time() < deadline:
            start = clock()
            answer = await port.request(target, Ping(seq, "client"))
            latencies.append(clock() - start)
            assert isinstance(answer, Pong)
            seq += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    await transport.close()
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_us": percentile(latencies, 50) / 1000,
        "p99_us": percentile(latencies, 99) / 1000,
        "first_request_ms": first_ms,
        "loop": loop_name(loop),
    }


def requests(seconds: float, rounds: int) -> dict[str, Any]:
    """The three modes alternating, ``rounds`` times each; the best round of each counts."""
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            port = free_port()
            with server_process(__file__, "--serve", mode, str(port), SECRET):
                results[mode].append(run(drive(mode, f"127.0.0.1:{port}", seconds)))
    best = {mode: max(rs, key=lambda r: r["ops_per_s"]) for mode, rs in results.items()}
    off = best["off"]["ops_per_s"]
    return {
        "rounds": results,
        "best": best,
        "ratios": {mode: best[mode]["ops_per_s"] / off for mode in MODES},
        "first_request_ms": {
            mode: statistics.median([r["first_request_ms"] for r in results[mode]])
            for mode in MODES
        },
    }


def main() -> None:
    """Run the measurements, print them, write ``bench/results/auth.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mode, port, secret = args.serve
        run(serve(mode, int(port), secret))
        return
    seconds = 1.0 if args.quick else 4.0
    raw = requests(seconds, 1 if args.quick else 3)
    for mode, best in raw["best"].items():
        print(
            f"requests, {mode:<16} {best['ops_per_s']:>9,.0f} req/s  p50 {best['p50_us']:6.0f} us"
            f"  p99 {best['p99_us']:6.0f} us  {raw['ratios'][mode]:.2f}x of off"
        )
    first = raw["first_request_ms"]
    for mode in MODES:
        print(
            f"first request on a new connection, {mode:<16} {first[mode]:.2f} ms"
            f"  (+{first[mode] - first['off']:.2f} ms for the handshake)"
        )
    base = {"replica_count": 1, "hot_cache_size": 0}
    mixes = {}
    for mode, extra in MODES.items():
        options = {**base, **extra}
        if mode != "off":
            options["disable_auth"] = False
        mixes[mode] = cluster_mix(seconds, f"rc 1, no hot cache, auth {mode}", options)
    off = mixes["off"]["ops_per_s"]
    for mode, mix in mixes.items():
        print(
            f"3-process cluster, {mode:<16} {mix['ops_per_s']:>9,.0f} ops/s  "
            f"p99 {mix['p99_us']:8.0f} us  {mix['ops_per_s'] / off:.2f}x of off  "
            f"failures {mix['failures']}"
        )
    targets = {
        "tags at least 0.85x (requests)": raw["ratios"]["ed25519"] >= 0.85,
        "encryption at least 0.75x (requests)": raw["ratios"]["ed25519+encrypt"] >= 0.75,
        "tags at least 0.85x (cluster)": mixes["ed25519"]["ops_per_s"] / off >= 0.85,
        "encryption at least 0.75x (cluster)": mixes["ed25519+encrypt"]["ops_per_s"] / off >= 0.75,
    }
    for target, met in targets.items():
        print(f"  {'met ' if met else 'MISSED'}  {target}")
    path = write(
        "auth",
        {
            "requests": raw,
            "cluster": mixes,
            "cluster_ratios": {m: mixes[m]["ops_per_s"] / off for m in MODES},
            "targets_met": targets,
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
