"""TCP under attack: a victim node in its own process against peers that break the limits.

Each attack gets a fresh victim: a GridKV node (``python -m gridkv.testing.node_process``, tcp
transport, default network limits, uvloop when installed) on 127.0.0.1, attacked over loopback
from this process:

* (a) a peer that never reads: one connection asks for a 1 MiB value over and over
  (GetRequest frames, a few bytes each) and reads none of the answers;
* (b) unfinished frames: 8 connections each announce a 16 MiB frame, send 15 MiB of it and
  stop there;
* (c) a trickle: one connection sends a frame one byte every 100 ms.

For each: the victim's idle RSS, its peak RSS during the attack (the kernel's high-water mark,
reset just before), the growth, how long until the victim cut each attacking connection (from
the attacker's side: its write failed or the connection ended), and the counters that say
which limit did it. An attack stops after ``--cap`` seconds or when the victim passes 1.5 GiB,
so the script also runs against a transport without limits (``PYTHONPATH`` pointing at an
older one) and reports that it was never cut.

Two figures come from this process alone: (d) a peer flooding one connection with requests
whose answers wait (the handler returns an awaitable): how many answers run at once; (e)
one-way frames (membership probes) sent while 48 MiB of requests wait for a peer that reads
4 MiB a second: how long each takes to arrive.

    python bench/attack_tcp.py [--quick] [--cap SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from _common import write
from gridkv.base.eventloop import loop_name, new_event_loop, run
from gridkv.base.options import NetworkOptions
from gridkv.cluster.ring import partition_of
from gridkv.testing.cluster import ProcessCluster
from gridkv.testing.transports import free_port
from gridkv.wire import codec
from gridkv.wire.framing import ONE_WAY, REQUEST, FrameReader, head
from gridkv.wire.messages import GetRequest
from gridkv_transport_tcp.transport import TcpTransport

KIB = 1024
MIB = 1024 * KIB
#: An attack stops when the victim's RSS passes this (a victim without limits would grow on).
RSS_CAP = 1536 * MIB
#: The value the attacker of (a) asks for, stored as text of this length.
VALUE_BYTES = MIB
PARTITIONS = 1024


# -- the victim's memory -----------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0]) * 1024
    return out


class RssWatch:
    """Samples a process's RSS every 10 ms in a thread; its peak also comes from VmHWM.

    VmHWM is reset when the watch starts (``clear_refs``), so the peak is this attack's alone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.idle = _status(pid)["VmRSS"]
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.sampled_peak = self.idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.sampled_peak = max(self.sampled_peak, _status(self.pid)["VmRSS"])
            except OSError:
                return

    @property
    def over_cap(self) -> bool:
        return self.sampled_peak > RSS_CAP

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        status = _status(self.pid)
        peak = max(self.sampled_peak, status["VmHWM"] if self.hwm_reset else 0)
        return {"idle_rss": self.idle, "peak_rss": peak, "growth": peak - self.idle}


# -- the attacks -------------------------------------------------------------------------------


async def _connect(address: str, rcvbuf: int | None = None) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def _until_cut(sock: socket.socket, began: float, cap: float) -> float | None:
    """Seconds from ``began`` until the victim ends the connection; ``None`` within ``cap``."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 64 * KIB), began + cap - loop.time())
            if not data:
                break
    except TimeoutError:  # before OSError, of which it is a subclass
        return None
    except OSError:
        pass
    return loop.time() - began


async def never_reads(address: str, cap: float, watch: RssWatch) -> list[float | None]:
    """(a): GetRequests for the 1 MiB value, 16 at a time, none of the answers read."""
    loop = asyncio.get_running_loop()
    body = codec.encode(GetRequest(partition_of("big", PARTITIONS), "big"))
    sock = await _connect(address, rcvbuf=64 * KIB)
    began = loop.time()
    request_id = 0
    try:
        while loop.time() - began < cap and not watch.over_cap:
            batch = []
            for _ in range(16):
                request_id += 1
                batch.append(head(REQUEST, request_id, len(body)) + body)
            await loop.sock_sendall(sock, b"".join(batch))
            await asyncio.sleep(0.005)
    except OSError:
        return [loop.time() - began]
    finally:
        sock.close()
    return [None]


async def unfinished_frames(address: str, cap: float, watch: RssWatch) -> list[float | None]:
    """(b): 8 connections, each with 15 MiB of a 16 MiB frame, then silence."""
    loop = asyncio.get_running_loop()
    chunk = head(REQUEST, 1, 16 * MIB - 64) + b"u" * (15 * MIB)
    socks = [await _connect(address) for _ in range(8)]
    began = loop.time()

    async def attack(sock: socket.socket) -> float | None:
        try:
            await loop.sock_sendall(sock, chunk)
        except OSError:
            return loop.time() - began
        return await _until_cut(sock, began, cap)

    try:
        return list(await asyncio.gather(*(attack(s) for s in socks)))
    finally:
        for sock in socks:
            sock.close()


async def trickle(address: str, cap: float, watch: RssWatch) -> list[float | None]:
    """(c): a 1,000-byte frame, one byte every 100 ms (it would take 100 s)."""
    loop = asyncio.get_running_loop()
    frame = head(REQUEST, 1, 1000) + b"t" * 1000
    sock = await _connect(address)
    began = loop.time()

    async def drip() -> None:
        for byte in frame:
            await loop.sock_sendall(sock, bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.ensure_future(drip())
    try:
        return [await _until_cut(sock, began, cap)]
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        sock.close()


Attack = Callable[[str, float, RssWatch], Coroutine[Any, Any, list[float | None]]]

ATTACKS: list[tuple[str, str, Attack]] = [
    ("a", "requests sent, answers (1 MiB each) never read", never_reads),
    ("b", "8 connections x 15 MiB of an unfinished frame", unfinished_frames),
    ("c", "a frame trickled one byte every 100 ms", trickle),
]

COUNTERS = ("slow_reader_cuts", "inbound_full_cuts", "slow_frame_cuts", "errors")


def attack_victim(key: str, attack: Attack, cap: float) -> dict[str, Any]:
    """A fresh victim node process, one attack on it, its memory and counters."""
    with ProcessCluster(1, {"log": {"level": "error"}}, prefix=f"victim-{key}-") as cluster:
        victim = cluster.node(0)
        victim.call("wait_ready", timeout=15)
        if attack is never_reads:
            victim.call("set", key="big", value=os.urandom(VALUE_BYTES // 2).hex())
        time.sleep(0.2)  # settle before the idle figure (a measurement, not a wait for state)
        watch = RssWatch(victim.pid)
        cut_after = run(attack(victim.address, cap, watch))
        memory = watch.stop()
        network = victim.call("stats")["network"]
    return {
        **memory,
        "cut_after_s": cut_after,
        "counters": {name: network.get(name, 0) for name in COUNTERS},
        "still_connected": network["connections"],
    }


# -- in-process figures ------------------------------------------------------------------------


async def answers_in_progress(count: int) -> dict[str, Any]:
    """(d): ``count`` requests on one connection whose answers all wait on one event."""
    release = asyncio.Event()
    running = [0, 0]

    async def answer(payload: bytes) -> bytes:
        running[0] += 1
        running[1] = max(running[1], running[0])
        try:
            await release.wait()
            return payload
        finally:
            running[0] -= 1

    server = TcpTransport(f"127.0.0.1:{free_port()}")
    await server.start(lambda peer, payload, sender: answer(payload))
    client = TcpTransport(f"127.0.0.1:{free_port()}", max_conns=1)
    await client.start(lambda peer, payload, sender: None)
    loop = asyncio.get_running_loop()
    calls = [
        asyncio.ensure_future(client.request(server.local_address, b"x", 60)) for _ in range(count)
    ]
    deadline = loop.time() + 10
    before = -1
    while running[0] != before and loop.time() < deadline:  # until no more answers start
        before = running[0]
        await asyncio.sleep(0.2)
    tasks = len(server._shared.tasks)
    release.set()
    answered = sum(
        isinstance(r, bytes) for r in await asyncio.gather(*calls, return_exceptions=True)
    )
    await client.close()
    await server.close()
    return {
        "requests": count,
        "peak_in_progress": running[1],
        "server_tasks": tasks,
        "answered": answered,
    }


class SlowPeer(asyncio.Protocol):
    """A peer that reads each connection at ``RATE`` bytes a second (a slow link or a busy
    node) and notes when each one-way frame arrives; it answers nothing."""

    RATE = 4 * MIB

    def __init__(self, arrived: dict[bytes, float]) -> None:
        self.arrived = arrived
        self.reader = FrameReader(16 * MIB)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        for kind, _, body in self.reader.feed(data, now):
            if kind == ONE_WAY:
                self.arrived[body] = now
        assert self.transport is not None
        self.transport.pause_reading()  # what was read takes len(data) / RATE to "process"
        asyncio.get_running_loop().call_later(len(data) / self.RATE, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


async def probes_behind_bulk(probes: int) -> dict[str, Any]:
    """(e): one-way frames to a peer that is slowly reading 48 MiB of requests from us."""
    loop = asyncio.get_running_loop()
    arrived: dict[bytes, float] = {}
    server = await loop.create_server(lambda: SlowPeer(arrived), "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = TcpTransport(f"127.0.0.1:{free_port()}", max_conns=1, write_timeout=60)
    await client.start(lambda peer, payload, sender: None)
    bulk = b"b" * MIB
    calls = [asyncio.ensure_future(client.request(address, bulk, 60)) for _ in range(48)]
    await asyncio.sleep(0.5)  # let the bulk frames queue up (part of the set-up, not a wait)
    latencies: list[float] = []
    lost = 0
    for i in range(probes):
        name = f"probe-{i}".encode()
        sent = time.perf_counter()
        try:
            await asyncio.wait_for(client.send(address, name), 2)
        except (OSError, TimeoutError):
            lost += 1
            continue
        while name not in arrived and time.perf_counter() - sent < 2:
            await asyncio.sleep(0.001)
        if name in arrived:
            latencies.append(arrived[name] - sent)
        else:
            lost += 1
    await client.close()
    await asyncio.gather(*calls, return_exceptions=True)
    server.close()
    return {
        "bulk_bytes": 48 * MIB,
        "peer_reads_bytes_per_s": SlowPeer.RATE,
        "probes": probes,
        "lost": lost,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "max_ms": max(latencies) * 1000 if latencies else None,
    }


# -- report ------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB"


def _cuts(times: list[float | None]) -> str:
    done = [t for t in times if t is not None]
    if not done:
        return "never"
    span = f"{min(done):.2f} s" if min(done) == max(done) else f"{min(done):.2f}-{max(done):.2f} s"
    return span + ("" if len(done) == len(times) else f" ({len(times) - len(done)} never)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter attacks")
    parser.add_argument("--cap", type=float, default=None, help="seconds an attack lasts at most")
    args = parser.parse_args()
    cap = args.cap or (8.0 if args.quick else 15.0)
    loop = new_event_loop()
    print(f"event loop: {loop_name(loop)}")
    loop.close()
    net = NetworkOptions()
    limits = {
        "max_output_buffer_bytes": net.max_output_buffer_bytes,
        "max_inbound_buffer_bytes": net.max_inbound_buffer_bytes,
        "max_frame_bytes": net.max_frame_bytes,
        "read_timeout_s": net.read_timeout,
        "write_timeout_s": net.write_timeout,
    }
    print(
        "victim: a node process, default limits: "
        f"network.max_output_buffer_bytes {_mib(net.max_output_buffer_bytes)}, "
        f"network.max_inbound_buffer_bytes {_mib(net.max_inbound_buffer_bytes)}, "
        f"network.max_frame_bytes {_mib(net.max_frame_bytes)}, "
        f"network.read_timeout {net.read_timeout:g}s, network.write_timeout {net.write_timeout:g}s"
    )
    print(f"{'attack':52} {'idle RSS':>10} {'peak RSS':>10} {'growth':>11}  cut after")
    results: dict[str, Any] = {}
    for key, label, attack in ATTACKS:
        r = attack_victim(key, attack, cap)
        results[key] = {"attack": label, **r}
        counted = ", ".join(f"{k} {v}" for k, v in r["counters"].items() if v)
        print(
            f"({key}) {label:48} {_mib(r['idle_rss']):>10} {_mib(r['peak_rss']):>10} "
            f"{'+' + _mib(r['growth']):>11}  {_cuts(r['cut_after_s'])}  [{counted or 'nothing'}]"
        )
    flood = run(answers_in_progress(2000 if args.quick else 10_000))
    print(
        f"(d) {flood['requests']:,} requests answered later on one connection: at most "
        f"{flood['peak_in_progress']} answers ran at once ({flood['server_tasks']} tasks), "
        f"{flood['answered']:,} answered"
    )
    lane = run(probes_behind_bulk(20 if args.quick else 50))
    latency = (
        f"p50 {lane['p50_ms']:.2f} ms, max {lane['max_ms']:.2f} ms"
        if lane["p50_ms"] is not None
        else "none arrived"
    )
    print(
        f"(e) one-way probes to a peer reading 48 MiB of requests at 4 MiB/s: "
        f"{lane['probes']} sent, {lane['lost']} lost (not there within 2 s), {latency}"
    )
    path = write(
        "attack_tcp",
        {
            "limits": limits,
            "cap_s": cap,
            "attacks": results,
            "answers_in_progress": flood,
            "probes_behind_bulk": lane,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
