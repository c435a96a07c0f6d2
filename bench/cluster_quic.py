"""QUIC: the quic transport against plain TCP and TCP with mutual TLS, raw and in a cluster.

* Raw rate: request/response round trips of 100-byte payloads from 50 concurrent tasks for a
  few seconds, server in a separate process, for each of: the GridKV ``tcp`` transport
  (plain), the ``tcp`` transport with mutual TLS, the ``quic`` transport (mutual TLS 1.3), a
  minimal aioquic echo (aioquic's own asyncio streams, a stream per request: the naive use of
  aioquic) and the minimal asyncio TCP echo of ``bench/cluster_tcp.py`` (same framing). All
  kinds in turns, ``--rounds`` rounds (5). Reported: each kind's best round, and the median
  over the rounds of each round's ratio to that round's plain tcp (the paired ratio, which
  the load of the machine at the time moves least); the CPU time per request of the client
  (this process, warm-up included) and of the server process (``/proc``, Linux). Target: quic
  at least 0.3x plain tcp (moonshot 0.5x).
* Cluster: 3 node processes on 127.0.0.1, 90/10 get/set from 64 tasks in each at once,
  ``replica_count`` 1 and the hot read cache off, so two thirds of the operations cross the
  network, over each transport (TLS ones with certificates from ``gridkv certs create``):
  tcp, tcp with mutual TLS (cluster secret), quic under a cluster secret (the authenticator
  seals frames inside TLS), and quic with ``auth`` on the CA of ``network.ssl`` (each node's
  certificate names it; the transport takes the authenticator's handshake over).
* ``--profile``: cProfile of the quic client's side of a raw run; the top functions by own
  time are printed and saved.

    python bench/cluster_quic.py [--quick] [--rounds N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cluster_tcp
from _common import server_process, write
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from cluster_tcp import CLIENTS, MinimalClient, cluster_mix, round_trips
from gridkv.base.config import merged
from gridkv.base.eventloop import run
from gridkv.base.options import SslOptions
from gridkv.testing.cluster import NodeProcess, ProcessCluster
from gridkv.testing.transports import free_port, tls_options
from gridkv.transport.base import Transport
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport
from gridkv_transport_tcp.transport import TcpTransport, ssl_contexts

#: The raw kinds, in the order of a round (every other round runs them the other way round):
#: quic next to plain tcp, the ratio that counts.
KINDS = ("tcp", "quic", "tcp+tls", "tcp minimal echo", "aioquic minimal")
#: The cluster runs, in the same manner.
CLUSTER_KINDS = ("tcp", "quic", "quic, auth on the CA", "tcp+tls")


def in_turns(kinds: tuple[str, ...], round_number: int) -> tuple[str, ...]:
    """``kinds`` in the order of round ``round_number``: forwards, then backwards (ABBA), so
    a drift in the machine's load hits each kind alike."""
    return kinds if round_number % 2 == 0 else kinds[::-1]


def paired_ratios(results: dict[str, list[dict[str, Any]]], kind: str, base: str) -> list[float]:
    """``kind``'s rate over ``base``'s, round by round."""
    return [
        r["ops_per_s"] / b["ops_per_s"] for r, b in zip(results[kind], results[base], strict=True)
    ]


def paired(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each kind's rate over plain tcp's, round by round, and the median of those ratios."""
    ratios = {kind: paired_ratios(results, kind, "tcp") for kind in results}
    return {
        "paired_ratios": ratios,
        "median_paired_ratio": {kind: statistics.median(rs) for kind, rs in ratios.items()},
    }


def _ssl(node: str, ca_dir: str) -> SslOptions:
    """``network.ssl`` of ``node`` with the certificates in ``ca_dir``."""
    return SslOptions(
        enabled=True,
        cert_file=f"{ca_dir}/{node}.crt",
        key_file=f"{ca_dir}/{node}.key",
        ca_file=f"{ca_dir}/ca.crt",
        check_hostname=False,
    )


def transport(kind: str, node: str, port: int, ca_dir: str) -> Transport:
    """A GridKV transport of ``kind`` for ``node`` on 127.0.0.1:``port``."""
    address = f"127.0.0.1:{port}"
    if kind == "tcp":
        return TcpTransport(address)
    options = _ssl(node, ca_dir)
    if kind == "tcp+tls":
        return TcpTransport(address, ssl_contexts=ssl_contexts(options))
    server, client = configurations(options, max_frame_bytes=16 * 1024 * 1024)
    return QuicTransport(address, server=server, client=client, ca_file=options.ca_file)


def _minimal_config(is_client: bool, ca_dir: str) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client, alpn_protocols=["echo"], verify_mode=ssl.CERT_REQUIRED
    )
    config.cafile = f"{ca_dir}/ca.crt"
    config.server_name = "server"  # the name the server's certificate holds
    if not is_client:
        config.load_cert_chain(f"{ca_dir}/server.crt", f"{ca_dir}/server.key")
    return config


async def serve_kind(kind: str, port: int, ca_dir: str) -> None:
    """Run an echo server of ``kind`` until stdin closes."""
    loop = asyncio.get_running_loop()
    if kind == "tcp minimal echo":
        await cluster_tcp.serve("minimal", port)
        return
    if kind == "aioquic minimal":
        answering: set[asyncio.Task[None]] = set()

        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async def answer() -> None:
                writer.write(await reader.read())
                writer.write_eof()

            task = loop.create_task(answer())
            answering.add(task)
            task.add_done_callback(answering.discard)

        server = await serve(
            "127.0.0.1", port, configuration=_minimal_config(False, ca_dir), stream_handler=handler
        )
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()
        return

    def echo(peer: str, body: bytes, sender: str | None) -> bytes:
        return body  # answered at once, as a node answers most messages

    node = transport(kind, "server", port, ca_dir)
    await node.start(echo)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    await node.close()


async def drive(kind: str, port: int, seconds: float, ca_dir: str) -> dict[str, Any]:
    """Round trips from CLIENTS tasks for ``seconds``; ops/s and latency percentiles, and
    ``calls``: the round trips made in all, warm-up included."""
    closing: Any = None
    call: Callable[[bytes], Awaitable[bytes]]
    if kind == "tcp minimal echo":
        loop = asyncio.get_running_loop()
        _, minimal = await loop.create_connection(MinimalClient, "127.0.0.1", port)
        call = minimal.request

        async def close_minimal() -> None:
            minimal.transport.close()

        closing = close_minimal()
    elif kind == "aioquic minimal":
        manager = connect(
            "127.0.0.1", port, configuration=_minimal_config(True, ca_dir), wait_connected=True
        )
        protocol: QuicConnectionProtocol = await manager.__aenter__()

        async def call(body: bytes) -> bytes:
            reader, writer = await protocol.create_stream()
            writer.write(body)
            writer.write_eof()
            return await reader.read()

        closing = manager.__aexit__(None, None, None)
    else:
        client = transport(kind, "client", free_port(), ca_dir)
        await client.start(_no_handler)
        target = f"127.0.0.1:{port}"

        async def call(body: bytes) -> bytes:
            return await client.request(target, body)

    calls = 0

    async def counted(body: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return await call(body)

    try:
        result = await round_trips(counted, seconds)
    finally:
        if closing is not None:
            await closing
        else:
            await client.close()
    return {**result, "calls": calls}


async def _no_handler(peer: str, body: bytes, sender: str | None) -> None:
    return None


def ca_directory() -> str:
    """The directory of this process's test CA (``server`` and ``client`` certificates)."""
    for node in ("server", "client"):
        files = tls_options(node)
    return str(Path(files["ca_file"]).parent)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far; ``None`` without ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command's ")": state is field 3 of stat(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(kind: str, seconds: float, ca_dir: str) -> dict[str, Any]:
    """A run of ``kind`` with its server in a fresh process, and the CPU both sides used."""
    port = free_port()
    with server_process(__file__, "--serve", kind, str(port), ca_dir) as server:
        server_before = cpu_seconds(server.pid)
        client_before = time.process_time()
        result = run(drive(kind, port, seconds, ca_dir))
        client = time.process_time() - client_before
        server_after = cpu_seconds(server.pid)
    calls = result["calls"]
    result["client_cpu_us"] = client / calls * 1e6
    if server_before is not None and server_after is not None:
        result["server_cpu_us"] = (server_after - server_before) / calls * 1e6
    return result


def raw_rates(seconds: float, rounds: int) -> dict[str, Any]:
    """Every kind of server, in turns, ``rounds`` times each.

    Each kind's best round, its ratio to the best plain tcp round, and the paired ratios: in
    each round, the kind's rate over that round's plain tcp rate; their median counts.
    """
    ca_dir = ca_directory()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for number in range(rounds):
        for kind in in_turns(KINDS, number):
            results[kind].append(one_round(kind, seconds, ca_dir))
    best = {kind: max(rs, key=lambda r: r["ops_per_s"]) for kind, rs in results.items()}
    plain = best["tcp"]["ops_per_s"]
    ratios = {kind: best[kind]["ops_per_s"] / plain for kind in KINDS}
    cpu = {
        kind: {
            side: statistics.median(r[f"{side}_cpu_us"] for r in rs)
            for side in ("client", "server")
            if all(f"{side}_cpu_us" in r for r in rs)
        }
        for kind, rs in results.items()
    }
    # The two echoes: the issue asking for this transport put a naive aioquic echo at
    # 0.24-0.26x of a minimal TCP echo; this run's are measured against each other here.
    echoes = {
        "quic / tcp minimal echo": ("quic", "tcp minimal echo"),
        "quic / aioquic minimal": ("quic", "aioquic minimal"),
        "aioquic minimal / tcp minimal echo": ("aioquic minimal", "tcp minimal echo"),
    }
    return {
        "rounds": results,
        "best": best,
        "ratio_to_plain_tcp": ratios,
        **paired(results),
        "echo_ratios_median": {
            name: statistics.median(paired_ratios(results, kind, base))
            for name, (kind, base) in echoes.items()
        },
        "cpu_us_per_request_median": cpu,
    }


#: Where a profiled function's own time is counted, by its file: the first part found in it.
PROFILE_GROUPS = (
    ("aioquic (packets, TLS, recovery)", "/aioquic/"),
    ("the quic transport (request path, lanes, frames)", "/gridkv_transport_quic/"),
    ("gridkv-core (frame reader, deadlines)", "/gridkv/"),
    ("this benchmark's tasks", "/bench/"),
)


def profile_client(seconds: float) -> str:
    """cProfile of the quic client's side of a raw run: own time by part, then the top 25
    functions by own time."""
    ca_dir = ca_directory()
    port = free_port()
    profiler = cProfile.Profile()
    with server_process(__file__, "--serve", "quic", str(port), ca_dir):
        profiler.enable()
        run(drive("quic", port, seconds, ca_dir))
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    own: dict[str, float] = {}
    for (path, _, _), entry in stats.stats.items():  # type: ignore[attr-defined]
        part = next((g for g, p in PROFILE_GROUPS if p in path), "the event loop and the rest")
        own[part] = own.get(part, 0.0) + entry[2]
    total = sum(own.values())
    out.write("own time by part:\n")
    for group, spent in sorted(own.items(), key=lambda item: -item[1]):
        out.write(f"  {spent / total:6.1%}  {group}\n")
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def cluster_options(kind: str) -> dict[str, Any]:
    """Options of the 3-process cluster over ``kind``, 2/3 of the operations remote.

    quic nodes get their own certificates (:class:`ProcessCluster` gives each one of this
    process's test CA); under ``"quic, auth on the CA"`` (:class:`BoundCluster`) they are
    also the nodes' ``auth``, otherwise a cluster secret is.
    """
    network: dict[str, Any] = {"type": "tcp" if kind.startswith("tcp") else "quic"}
    if kind == "tcp+tls":
        # Any certificate of the cluster CA will do (the cluster secret authenticates).
        network["ssl"] = {**tls_options("cluster"), "check_hostname": False}
    options: dict[str, Any] = {"replica_count": 1, "hot_cache_size": 0, "network": network}
    if kind == "quic, auth on the CA":
        options["auth"] = {}  # no cluster secret: BoundCluster gives each node its files
    return options


class BoundCluster(ProcessCluster):
    """A :class:`ProcessCluster` whose nodes are authenticated by their TLS certificates.

    Each node's ``auth`` and ``network.ssl`` are the same files, its certificate, key and
    this process's test CA (made as ``gridkv certs create`` and ``add`` make them): the
    configuration ``gridkv-transport-quic/README.md`` recommends.
    """

    def _spawn(self, index: int, address: str) -> NodeProcess:
        files = tls_options(f"{self.prefix}{index}")
        own = {key: files[key] for key in ("ca_file", "cert_file", "key_file")}
        common = self.options
        self.options = merged(common, {"auth": own, "network": {"ssl": files}})
        try:
            return super()._spawn(index, address)
        finally:
            self.options = common


def cluster_rates(seconds: float, rounds: int) -> dict[str, Any]:
    """The 3-process cluster over each of :data:`CLUSTER_KINDS`, in turns, ``rounds`` times.

    Each kind's median round, its failures and largest replication backlog over the rounds,
    and the paired ratios to plain tcp with their median.
    """
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CLUSTER_KINDS}
    for number in range(rounds):
        for kind in in_turns(CLUSTER_KINDS, number):
            cluster_type = BoundCluster if kind == "quic, auth on the CA" else ProcessCluster
            results[kind].append(
                cluster_mix(seconds, kind, cluster_options(kind), cluster_type=cluster_type)
            )
    failures: dict[str, dict[str, int]] = {}
    for kind, rs in results.items():
        failures[kind] = {}
        for r in rs:
            for name, count in r["failures"].items():
                failures[kind][name] = failures[kind].get(name, 0) + count
    return {
        "rounds": results,
        "median_round": {
            kind: sorted(rs, key=lambda r: r["ops_per_s"])[len(rs) // 2]
            for kind, rs in results.items()
        },
        "failures": failures,
        "backlog_bytes": {
            kind: max(r["backlog_bytes"] for r in rs) for kind, rs in results.items()
        },
        **paired(results),
    }


def print_raw(raw: dict[str, Any], rounds: int) -> None:
    """The raw figures: best round, median paired ratio, each round's, CPU per request."""
    print(
        f"raw round trips, {CLIENTS} concurrent tasks, 100 B, {rounds} rounds "
        "(best round; ratio to plain tcp: of the best rounds, and the median of each round's):"
    )
    for kind in KINDS:
        best = raw["best"][kind]
        cpu = raw["cpu_us_per_request_median"][kind]
        cpu_text = "  ".join(f"{side} {us:4.1f}" for side, us in cpu.items())
        print(
            f"  {kind:16} {best['ops_per_s']:9.0f} req/s  p50 {best['p50_us']:7.0f} us  "
            f"p99 {best['p99_us']:7.0f} us  best {raw['ratio_to_plain_tcp'][kind]:.3f}x  "
            f"median {raw['median_paired_ratio'][kind]:.3f}x  "
            f"CPU us/request (median) {cpu_text or 'n/a'}"
        )
    print("  each round, req/s (ratio to that round's plain tcp):")
    for kind in KINDS:
        rounds_text = ", ".join(
            f"{r['ops_per_s']:.0f} ({ratio:.3f}x)"
            for r, ratio in zip(raw["rounds"][kind], raw["paired_ratios"][kind], strict=True)
        )
        print(f"    {kind:16} {rounds_text}")
    print(
        "  against the echoes (medians of paired rounds; the issue cites a naive aioquic echo "
        "at 0.24-0.26x of a minimal TCP echo):"
    )
    for name, ratio in raw["echo_ratios_median"].items():
        print(f"    {name:36} {ratio:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one round")
    parser.add_argument("--rounds", type=int, default=5, help="raw rounds of each kind (5)")
    parser.add_argument(
        "--cluster-rounds", type=int, default=3, help="cluster runs of each kind (3)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile the quic client")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "CA_DIR"), help="internal")
    args = parser.parse_args()
    if args.serve:
        kind, port, ca_dir = args.serve
        run(serve_kind(kind, int(port), ca_dir))
        return
    seconds, rounds, mix_seconds, mix_rounds = (
        (1.5, 1, 3.0, 1) if args.quick else (4.0, args.rounds, 8.0, args.cluster_rounds)
    )
    data: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "clients": CLIENTS,
        "cluster_seconds": mix_seconds,
        "cluster_rounds": mix_rounds,
    }
    raw = raw_rates(seconds, rounds)
    data["raw"] = raw
    print_raw(raw, rounds)
    data["cluster"] = mixes = cluster_rates(mix_seconds, mix_rounds)
    print(
        f"3 processes, 90/10, replica_count 1, hot cache off, {mix_rounds} rounds "
        "(median round; ratio to plain tcp: median of each round's):"
    )
    for kind in CLUSTER_KINDS:
        result = mixes["median_round"][kind]
        rounds_text = ", ".join(
            f"{r['ops_per_s']:.0f} ({ratio:.2f}x)"
            for r, ratio in zip(mixes["rounds"][kind], mixes["paired_ratios"][kind], strict=True)
        )
        print(
            f"  {kind:20} {result['ops_per_s']:9.0f} ops/s  p50 {result['p50_us']:7.0f} us  "
            f"p99 {result['p99_us']:7.0f} us  median {mixes['median_paired_ratio'][kind]:.2f}x  "
            f"failures {mixes['failures'][kind] or 'none'}, backlog at most "
            f"{mixes['backlog_bytes'][kind]} B; rounds: {rounds_text}"
        )
    quic_best, quic_median = raw["ratio_to_plain_tcp"]["quic"], raw["median_paired_ratio"]["quic"]
    data["targets_met"] = {
        "quic at least 0.3x plain tcp (raw, median of the paired rounds)": quic_median >= 0.3,
        "quic at least 0.3x plain tcp (raw, best rounds)": quic_best >= 0.3,
        "quic at least 0.5x plain tcp (raw, median, moonshot)": quic_median >= 0.5,
    }
    if args.profile:
        data["profile"] = text = profile_client(seconds)
        print(text)
    print(f"targets met: {data['targets_met']}")
    print(f"wrote {write('cluster_quic', data)}")


if __name__ == "__main__":
    main()
