"""QUIC: the quic transport against plain TCP and TCP with mutual TLS, raw and in a cluster.

* Raw rate: request/response round trips of 100-byte payloads from 50 concurrent tasks for a
  few seconds, server in a separate process, for each of: the GridKV ``tcp`` transport
  (plain), the ``tcp`` transport with mutual TLS, the ``quic`` transport (mutual TLS 1.3), and
  a minimal aioquic echo (aioquic's own asyncio streams, a stream per request: the naive use
  of aioquic). In turns, ``--rounds`` times each; the best round of each counts. Target: quic
  at least 0.3x plain tcp (moonshot 0.5x).
* Cluster: 3 node processes on 127.0.0.1, 90/10 get/set from 64 tasks in each at once,
  ``replica_count`` 1 and the hot read cache off, so two thirds of the operations cross the
  network, over each transport (TLS ones with certificates from ``gridkv certs create``).
* ``--profile``: cProfile of the quic client's side of a raw run; the top functions by own
  time are printed and saved.

    python bench/cluster_quic.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import ssl
import sys
from pathlib import Path
from typing import Any

from _common import server_process, write
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from cluster_tcp import CLIENTS, cluster_mix, round_trips
from gridkv.base.eventloop import run
from gridkv.base.options import SslOptions
from gridkv.testing.transports import free_port, tls_options
from gridkv.transport.base import Transport
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport
from gridkv_transport_tcp.transport import TcpTransport, ssl_contexts

KINDS = ("tcp", "tcp+tls", "quic", "aioquic minimal")


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
    """Round trips from CLIENTS tasks for ``seconds``; ops/s and latency percentiles."""
    closing: Any = None
    if kind == "aioquic minimal":
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

    try:
        return await round_trips(call, seconds)
    finally:
        if closing is not None:
            await closing
        else:
            await client.close()


async def _no_handler(peer: str, body: bytes, sender: str | None) -> None:
    return None


def ca_directory() -> str:
    """The directory of this process's test CA (``server`` and ``client`` certificates)."""
    for node in ("server", "client"):
        files = tls_options(node)
    return str(Path(files["ca_file"]).parent)


def raw_rates(seconds: float, rounds: int) -> dict[str, Any]:
    """Every kind of server, in turns, ``rounds`` times each; the best round of each counts."""
    ca_dir = ca_directory()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            port = free_port()
            with server_process(__file__, "--serve", kind, str(port), ca_dir):
                results[kind].append(run(drive(kind, port, seconds, ca_dir)))
    best = {kind: max(rs, key=lambda r: r["ops_per_s"]) for kind, rs in results.items()}
    plain = best["tcp"]["ops_per_s"]
    ratios = {kind: best[kind]["ops_per_s"] / plain for kind in KINDS}
    return {"rounds": results, "best": best, "ratio_to_plain_tcp": ratios}


def profile_client(seconds: float) -> str:
    """cProfile of the quic client's side of a raw run: the top 25 functions by own time."""
    ca_dir = ca_directory()
    port = free_port()
    profiler = cProfile.Profile()
    with server_process(__file__, "--serve", "quic", str(port), ca_dir):
        profiler.enable()
        run(drive("quic", port, seconds, ca_dir))
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def cluster_options(kind: str) -> dict[str, Any]:
    """Options of the 3-process cluster over ``kind``, 2/3 of the operations remote."""
    network: dict[str, Any] = {"type": "tcp" if kind.startswith("tcp") else "quic"}
    if kind == "tcp+tls":
        # Any certificate of the cluster CA will do (the cluster secret authenticates).
        network["ssl"] = {**tls_options("cluster"), "check_hostname": False}
    return {"replica_count": 1, "hot_cache_size": 0, "network": network}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one round")
    parser.add_argument("--profile", action="store_true", help="also profile the quic client")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "CA_DIR"), help="internal")
    args = parser.parse_args()
    if args.serve:
        kind, port, ca_dir = args.serve
        run(serve_kind(kind, int(port), ca_dir))
        return
    seconds, rounds, mix_seconds = (1.5, 1, 3.0) if args.quick else (4.0, 3, 8.0)
    data: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "clients": CLIENTS}
    raw = raw_rates(seconds, rounds)
    data["raw"] = raw
    print(f"raw round trips, {CLIENTS} concurrent tasks, 100 B (best of {rounds}):")
    for kind in KINDS:
        best = raw["best"][kind]
        print(
            f"  {kind:16} {best['ops_per_s']:9.0f} ops/s  p50 {best['p50_us']:7.0f} us  "
            f"p99 {best['p99_us']:7.0f} us  {raw['ratio_to_plain_tcp'][kind]:.2f}x plain tcp"
        )
    mixes = {}
    print("3 processes, 90/10, replica_count 1, hot cache off:")
    for kind in ("tcp", "tcp+tls", "quic"):
        mixes[kind] = result = cluster_mix(mix_seconds, kind, cluster_options(kind))
        print(
            f"  {kind:16} {result['ops_per_s']:9.0f} ops/s  p50 {result['p50_us']:7.0f} us  "
            f"p99 {result['p99_us']:7.0f} us  backlog {result['backlog_bytes']} B  "
            f"failures {result['failures'] or 'none'}"
        )
    data["cluster"] = mixes
    data["cluster_ratio_to_plain_tcp"] = {
        kind: mixes[kind]["ops_per_s"] / mixes["tcp"]["ops_per_s"] for kind in mixes
    }
    data["targets_met"] = {
        "quic at least 0.3x plain tcp (raw)": raw["ratio_to_plain_tcp"]["quic"] >= 0.3,
        "quic at least 0.5x plain tcp (raw, moonshot)": raw["ratio_to_plain_tcp"]["quic"] >= 0.5,
    }
    if args.profile:
        data["profile"] = text = profile_client(seconds)
        print(text)
    print(f"targets met: {data['targets_met']}")
    print(f"wrote {write('cluster_quic', data)}")


if __name__ == "__main__":
    main()
