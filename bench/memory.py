"""Bytes per key in the memory backend for 1,000,000 keys, against Redis in the same run.

Keys are 16 bytes ("key:000000000001"), values 32 bytes, no TTL. For GridKV the figure is the
growth of the process's resident memory (RSS) while the keys are written through the public
API, divided by the key count; the storage's own accounting (``used_bytes``) is shown beside
it. For Redis it is the growth of ``used_memory`` (INFO memory) while the same keys are
written, when ``redis-server`` is on the PATH; otherwise that column is skipped and the run
says so. Redis is started on a free loopback port, with persistence off, and stopped by PID.

Target (issue 2): at most 2x Redis.

    python bench/memory.py [--keys N]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import gridkv
from _common import write
from gridkv.transport import MemoryNetwork, MemoryTransport

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def key_of(i: int) -> str:
    return f"key:{i:012d}"


def value_of(i: int) -> bytes:
    return i.to_bytes(8, "little") * 4


def measure_gridkv(n: int) -> dict[str, Any]:
    transport = MemoryTransport("bench-mem:1", MemoryNetwork())
    options = gridkv.Options.from_mapping(
        {"local_node_id": "bench-mem", "log": {"level": "warning"}, "storage": {"max_memory_mb": 0}}
    )
    with gridkv.GridKV(options, transport=transport) as kv:
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        for i in range(n):
            kv.set(key_of(i), value_of(i))
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_bytes()
        assert kv.get(key_of(n - 1)) == value_of(n - 1)
        stats = kv.stats().storage
        return {
            "keys": stats.keys,
            "rss_bytes_per_key": (after - before) / n,
            "accounted_bytes_per_key": stats.used_bytes / n,
            "load_seconds": elapsed,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class _Redis:
    """Just enough of the Redis protocol to load keys in pipelines and read INFO."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bulk(self) -> bytes:
        header = self._line()
        size = int(header[1:])
        while len(self.buf) < size + 2:
            self.buf += self.sock.recv(1 << 16)
        data, self.buf = self.buf[:size], self.buf[size + 2 :]
        return data

    def pipeline_set(self, items: list[tuple[bytes, bytes]]) -> None:
        self.sock.sendall(b"".join(_command(b"SET", k, v) for k, v in items))
        for _ in items:
            line = self._line()
            if line != b"+OK":
                raise RuntimeError(f"redis answered {line!r}")

    def info(self, section: bytes) -> dict[str, str]:
        self.sock.sendall(_command(b"INFO", section))
        text = self._bulk().decode()
        return dict(
            line.split(":", 1)
            for line in text.splitlines()
            if ":" in line and not line.startswith("#")
        )

    def dbsize(self) -> int:
        self.sock.sendall(_command(b"DBSIZE"))
        return int(self._line()[1:])


def measure_redis(n: int) -> dict[str, Any] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client = _Redis(port)
                    client.dbsize()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            before = int(client.info(b"memory")["used_memory"])
            version = client.info(b"server").get("redis_version", "")
            batch: list[tuple[bytes, bytes]] = []
            for i in range(n):
                batch.append((key_of(i).encode(), value_of(i)))
                if len(batch) == 10_000:
                    client.pipeline_set(batch)
                    batch = []
            if batch:
                client.pipeline_set(batch)
            info = client.info(b"memory")
            assert client.dbsize() == n
            return {
                "used_memory_bytes_per_key": (int(info["used_memory"]) - before) / n,
                "allocator": info.get("mem_allocator", ""),
                "redis_version": version,
            }
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.keys
    grid = measure_gridkv(n)
    redis = measure_redis(n)
    print(f"{n} keys, 16-byte keys, 32-byte values")
    print(
        f"GridKV memory backend: {grid['rss_bytes_per_key']:.1f} bytes/key (RSS growth), "
        f"{grid['accounted_bytes_per_key']:.1f} bytes/key accounted, "
        f"loaded in {grid['load_seconds']:.2f}s"
    )
    ratio = None
    if redis is None:
        print("Redis: redis-server is not installed; the Redis column is skipped")
    else:
        ratio = grid["rss_bytes_per_key"] / redis["used_memory_bytes_per_key"]
        print(
            f"Redis {redis['redis_version']} ({redis['allocator']}): "
            f"{redis['used_memory_bytes_per_key']:.1f} bytes/key (used_memory growth)"
        )
        print(
            f"GridKV / Redis: {ratio:.2f}x (target at most 2x) {'met' if ratio <= 2 else 'MISSED'}"
        )
    path = write("memory", {"keys": n, "gridkv": grid, "redis": redis, "ratio_to_redis": ratio})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
