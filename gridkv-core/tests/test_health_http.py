"""Liveness and readiness over HTTP (``health.listen``, ``gridkv node --health``): real sockets
on loopback, answers that map to ``health_check`` and ``wait_ready``, and a server that
outlives every bad request."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gridkv import AsyncGridKV, ConfigError
from gridkv.cli import main
from gridkv.service import health
from gridkv.service.health import HealthServer
from gridkv.testing.transports import node_options
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

LISTEN = "127.0.0.1:0"


async def ask(address: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``, end the sending side, and read the whole answer: status, headers
    (lower-case names), body."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        writer.write_eof()
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def get(address: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    status, headers, body = await ask(
        address, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert headers["connection"] == "close"
    if method != "HEAD":
        assert int(headers["content-length"]) == len(body)
    return status, body


@pytest.fixture
async def ready_node() -> AsyncIterator[tuple[AsyncGridKV, HealthServer]]:
    async with AsyncGridKV(**node_options("health-ready")) as kv:
        await kv.wait_ready(timeout=10)
        async with HealthServer(kv, LISTEN) as server:
            yield kv, server


def lonely(**extra: Any) -> AsyncGridKV:
    """A node whose only seed never answers: it never becomes ready."""
    return AsyncGridKV(
        local_node_id="lonely",
        local_address="lonely:1",
        seed_addrs=["ghost:1"],
        disable_auth=True,
        network={"type": "memory"},
        transport=MemoryTransport("lonely:1", MemoryNetwork(), timeout=0.2),
        **extra,
    )


async def test_a_running_ready_node_is_live_and_ready(
    ready_node: tuple[AsyncGridKV, HealthServer],
) -> None:
    _, server = ready_node
    assert re.fullmatch(r"127\.0\.0\.1:\d+", server.address)
    assert not server.address.endswith(":0")
    assert await get(server.address, "/livez") == (200, b"ok\n")
    assert await get(server.address, "/readyz") == (200, b"ok\n")
    assert await get(server.address, "/readyz?verbose") == (200, b"ok\n")
    status, headers, body = await ask(server.address, b"HEAD /readyz HTTP/1.1\r\n\r\n")
    assert (status, body, headers["content-length"]) == (200, b"", "3")


async def test_a_node_that_is_not_ready_answers_503_naming_the_problem() -> None:
    async with lonely(startup_grace_period=0.05) as kv, HealthServer(kv, LISTEN) as server:
        status, body = await get(server.address, "/readyz")
        assert status == 503
        assert b"no seed answered" in body and b"ghost:1" in body
        assert body.endswith(b"\n") and body.count(b"\n") == 1
        await wait_until(lambda: _unhealthy(kv))
        status, body = await get(server.address, "/livez")
        assert status == 503
        assert b"no healthy view of the cluster" in body


def _unhealthy(kv: AsyncGridKV) -> bool:
    try:
        kv.node.health_check()
    except Exception:
        return True
    return False


async def test_a_node_that_is_live_in_its_grace_period_but_not_ready_yet() -> None:
    async with lonely(startup_grace_period=60) as kv, HealthServer(kv, LISTEN) as server:
        assert await get(server.address, "/livez") == (200, b"ok\n")
        assert (await get(server.address, "/readyz"))[0] == 503


async def test_a_closed_node_is_neither_live_nor_ready() -> None:
    kv = AsyncGridKV(**node_options("health-closed"))
    async with kv:
        await kv.wait_ready(timeout=10)
    async with HealthServer(kv, LISTEN) as server:
        for path in ("/livez", "/readyz"):
            status, body = await get(server.address, path)
            assert status == 503
            assert b"closed" in body


async def test_unknown_paths_methods_and_malformed_requests_get_their_status(
    ready_node: tuple[AsyncGridKV, HealthServer],
) -> None:
    _, server = ready_node
    address = server.address
    assert (await get(address, "/metrics"))[0] == 404
    assert (await get(address, "/"))[0] == 404
    status, headers, _ = await ask(address, b"POST /livez HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    for raw in [
        b"garbage\r\n\r\n",
        b"GET /livez\r\n\r\n",
        b"GET /livez SPDY/3\r\n\r\n",
        b"GET  /livez HTTP/1.1\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /livez HTTP/1.1\r\n: no name\r\n\r\n",
        b"G\xc3\x89T /livez HTTP/1.1\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
        b"GET /livez HTTP/1.1\r\n",  # then the client closes its side
    ]:
        status, _, _ = await ask(address, raw)
        assert status == 400, raw
    # Bare line feeds are accepted, and empty lines before the request are skipped.
    status, _, _ = await ask(address, b"\r\nGET /livez HTTP/1.0\nHost: x\n\n")
    assert status == 200
    assert await get(address, "/livez") == (200, b"ok\n")  # the server lives on


async def test_an_oversized_request_is_cut_and_the_server_lives_on(
    ready_node: tuple[AsyncGridKV, HealthServer],
) -> None:
    _, server = ready_node
    huge_line = b"GET /" + b"a" * (2 * health.MAX_HEAD_BYTES) + b" HTTP/1.1\r\n\r\n"
    pad = (b"X-Pad: " + b"c" * 100 + b"\r\n") * 100  # each line short, all over the bound
    many_headers = b"GET /livez HTTP/1.1\r\n" + pad + b"\r\n"
    for raw in (huge_line, many_headers):
        status, _, _ = await ask(server.address, raw)
        assert status == 431
    assert await get(server.address, "/livez") == (200, b"ok\n")


async def test_a_slow_request_is_cut_and_the_server_lives_on(
    ready_node: tuple[AsyncGridKV, HealthServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = ready_node
    monkeypatch.setattr(health, "REQUEST_TIMEOUT", 0.2)
    host, _, port = server.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and never the empty line
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the server ends it, not us
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert await get(server.address, "/livez") == (200, b"ok\n")


async def test_connections_past_the_limit_are_closed_at_once(
    ready_node: tuple[AsyncGridKV, HealthServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = ready_node
    monkeypatch.setattr(health, "MAX_CONNECTIONS", 2)
    host, _, port = server.address.rpartition(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
    try:
        await wait_until(lambda: server.connections == 2)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # no answer
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        for _, w in idle:
            w.close()
            await w.wait_closed()
    await wait_until(lambda: server.connections == 0)
    assert await get(server.address, "/livez") == (200, b"ok\n")


async def test_close_ends_open_connections_and_stops_listening() -> None:
    async with AsyncGridKV(**node_options("health-close")) as kv:
        server = HealthServer(kv, LISTEN)
        await server.start()
        address = server.address
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            await wait_until(lambda: server.connections == 1)
            await server.close()
            await server.close()  # idempotent
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
            await writer.wait_closed()
        assert server.address == "" and server.connections == 0
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, int(port))


async def test_an_address_in_use_is_a_config_error_naming_the_key(
    ready_node: tuple[AsyncGridKV, HealthServer],
) -> None:
    kv, server = ready_node
    with pytest.raises(ConfigError, match=r"'health.listen': cannot listen on"):
        await HealthServer(kv, server.address).start()


async def test_an_empty_address_serves_nothing() -> None:
    async with AsyncGridKV(**node_options("health-off")) as kv, HealthServer(kv, "") as server:
        assert server.address == ""


# -- gridkv node --health --------------------------------------------------------------------


def test_a_bad_health_flag_exits_1_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "--health", "nowhere"]) == 1
    assert "config key 'health.listen'" in capsys.readouterr().err


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_gridkv_node_serves_readyz_and_a_sigterm_exits_0() -> None:
    env = {
        **os.environ,
        "GRIDKV_LOCAL_NODE_ID": "cli-health",
        "GRIDKV_LOCAL_ADDRESS": "cli-health:7946",
        "GRIDKV_NETWORK__TYPE": "memory",
        "GRIDKV_LOG__NO_TIME": "true",
        # The flag wins over the variable: this address would fail to listen.
        "GRIDKV_HEALTH__LISTEN": "no-such-host.invalid:0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gridkv.cli", "node", "--health", LISTEN],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        lines = []
        address = None
        deadline = time.monotonic() + 30
        for line in process.stderr:  # until the probes listen
            lines.append(line)
            found = re.search(r"/readyz\).* address=(\S+)", line)
            if found:
                address = found.group(1)
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert address is not None, "".join(lines)
        status, body = _http_get(f"http://{address}/readyz")
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
            status, body = _http_get(f"http://{address}/readyz")
        assert (status, body) == (200, b"ok\n")
        assert _http_get(f"http://{address}/livez") == (200, b"ok\n")
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, "".join(lines) + rest
    assert "node closed" in rest
