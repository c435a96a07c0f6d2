"""The RESP door against redis-py (asyncio), as Redis 7 documents each command's answers.

One node, its door on a free port of 127.0.0.1; the examples are those of redis.io's command
pages where they have one. Raw sockets send what no client library would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from gridkv import AsyncGridKV, ConfigError, PeerUnavailable
from gridkv.cli import main
from gridkv.service.resp import RespServer
from gridkv.testing.transports import node_options
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

_ids = count()


async def _door(**resp: Any) -> tuple[AsyncGridKV, RespServer]:
    options = node_options(f"resp{next(_ids)}")
    options["resp"] = {"listen": "127.0.0.1:0", **resp}
    kv = AsyncGridKV(**options)
    await kv.start()
    server = RespServer(kv, "127.0.0.1:0")
    await server.start()
    return kv, server


@pytest.fixture
async def door() -> AsyncIterator[RespServer]:
    kv, server = await _door()
    try:
        yield server
    finally:
        await server.close()
        await kv.close()


def _client(port: int, **options: Any) -> aredis.Redis:
    """A redis-py client that reports the first failure (no retries, no back-off)."""
    return aredis.Redis(port=port, retry=Retry(NoBackoff(), 0), **options)


async def _cmd(client: aredis.Redis, *args: Any) -> Any:
    """A command redis-py has no method for (or one whose raw answer the test wants)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def _port(server: RespServer) -> int:
    return int(server.address.rpartition(":")[2])


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def r(door: RespServer, request: pytest.FixtureRequest) -> AsyncIterator[aredis.Redis]:
    client = _client(_port(door), protocol=request.param)
    try:
        yield client
    finally:
        await client.aclose()


async def _check(server: RespServer, data: bytes, expected: bytes) -> None:
    """Send ``data`` on a fresh connection; the answer is ``expected`` (and the connection open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(data)
    got = b""
    while len(got) < len(expected):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, f"closed after {got!r}"
        got += chunk
    writer.close()
    assert got == expected


async def _raw(server: RespServer, data: bytes, expect_close: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; what comes back until quiet or closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 0.5 if not expect_close else 5)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        assert not expect_close, f"not closed; got {b''.join(chunks)!r}"
    writer.close()
    return b"".join(chunks)


# -- strings --------------------------------------------------------------------------------


async def test_set_and_its_options(r: aredis.Redis) -> None:
    assert await r.set("k", "v") is True
    assert await r.get("k") == b"v"
    assert await r.set("k", "w", nx=True) is None
    assert await r.set("new", "w", xx=True) is None
    assert await r.get("new") is None
    assert await r.set("k", "w", xx=True) is True
    assert await r.set("k", "x", get=True) == b"w"
    assert await r.set("absent", "x", nx=True, get=True) is None
    assert await r.get("absent") == b"x"
    assert await r.set("k", "y", ex=100) is True
    assert 99 <= await r.ttl("k") <= 100
    assert await r.set("k", "z", keepttl=True) is True
    assert 99 <= await r.ttl("k") <= 100
    assert await r.set("k", "z") is True
    assert await r.ttl("k") == -1
    await r.set("k", "p", px=100_000)
    assert 99_000 < await r.pttl("k") <= 100_000
    at = int(time.time()) + 1000
    await r.set("k", "q", exat=at)
    assert await r.expiretime("k") == at
    await r.set("k", "q", pxat=at * 1000 + 5)
    assert await r.pexpiretime("k") == at * 1000 + 5
    await r.set("gone", "q", pxat=int(time.time() * 1000) - 1000)  # in the past: no key
    assert await r.exists("gone") == 0


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["SET", "k", "v", "EX", "0"], "invalid expire time in 'set' command"),
        (["SET", "k", "v", "EX", "-5"], "invalid expire time in 'set' command"),
        (["SET", "k", "v", "EX", "x"], "value is not an integer or out of range"),
        (["SET", "k", "v", "EX", "10", "PX", "10"], "syntax error"),
        (["SET", "k", "v", "NX", "XX"], "syntax error"),
        (["SET", "k", "v", "KEEPTTL", "EX", "1"], "syntax error"),
        (["SET", "k", "v", "EX"], "syntax error"),
        (["SET", "k", "v", "BOGUS"], "syntax error"),
        (["SETEX", "k", "0", "v"], "invalid expire time in 'setex' command"),
        (["PSETEX", "k", "-1", "v"], "invalid expire time in 'psetex' command"),
        (["GET"], "wrong number of arguments for 'get' command"),
        (["GETEX", "k", "EX"], "syntax error"),
        (["MSET", "a", "1", "b"], "wrong number of arguments for 'mset' command"),
        (["SETRANGE", "k", "-1", "x"], "offset is out of range"),
        (["GETRANGE", "k", "a", "1"], "value is not an integer or out of range"),
        (["INCRBY", "k", "1.5"], "value is not an integer or out of range"),
        (["INCRBYFLOAT", "k", "abc"], "value is not a valid float"),
    ],
)
async def test_bad_arguments_get_redis_s_errors(
    r: aredis.Redis, command: list[str], error: str
) -> None:
    with pytest.raises(redis.ResponseError, match=f"^{error}$"):
        await _cmd(r, *command)


async def test_setnx_setex_getset_getdel_getex(r: aredis.Redis) -> None:
    assert await _cmd(r, "SETNX", "k", "1") == 1
    assert await _cmd(r, "SETNX", "k", "2") == 0
    assert await _cmd(r, "SETEX", "e", 100, "v") in (b"OK", "OK", True)
    assert 99 <= await r.ttl("e") <= 100
    assert await r.psetex("p", 100_000, "v") is True
    assert await _cmd(r, "GETSET", "k", "3") == b"1"
    assert await _cmd(r, "GETSET", "none", "x") is None
    assert await r.getdel("k") == b"3"
    assert await r.getdel("k") is None
    await r.set("g", "v")
    assert await r.getex("g") == b"v"
    assert await r.ttl("g") == -1
    assert await r.getex("g", ex=50) == b"v"
    assert 49 <= await r.ttl("g") <= 50
    assert await r.getex("g", persist=True) == b"v"
    assert await r.ttl("g") == -1
    assert await r.getex("missing", ex=5) is None


async def test_mget_mset_msetnx(r: aredis.Redis) -> None:
    assert await r.mset({"a": "1", "b": "2"}) is True
    assert await r.mget("a", "b", "c") == [b"1", b"2", None]
    assert await r.msetnx({"c": "3", "a": "x"}) is False
    assert await r.get("c") is None
    assert await r.msetnx({"c": "3", "d": "4"}) is True
    assert await r.mget("c", "d") == [b"3", b"4"]


async def test_append_strlen_getrange_setrange_as_documented(r: aredis.Redis) -> None:
    assert await r.append("mykey", "Hello") == 5
    assert await r.append("mykey", " World") == 11
    assert await r.get("mykey") == b"Hello World"
    assert await r.strlen("mykey") == 11
    assert await r.strlen("nonexisting") == 0
    await r.set("s", "This is a string")
    assert await r.getrange("s", 0, 3) == b"This"
    assert await r.getrange("s", -3, -1) == b"ing"
    assert await r.getrange("s", 0, -1) == b"This is a string"
    assert await r.getrange("s", 10, 100) == b"string"
    assert await r.getrange("s", -1, -5) == b""
    assert await r.getrange("s", 5, 3) == b""
    assert await r.getrange("s", -100, 3) == b"This"
    assert await _cmd(r, "SUBSTR", "s", 0, 3) == b"This"
    assert await r.getrange("none", 0, -1) == b""
    await r.set("key1", "Hello World")
    assert await r.setrange("key1", 6, "Redis") == 11
    assert await r.get("key1") == b"Hello Redis"
    assert await r.setrange("key2", 6, "Redis") == 11
    assert await r.get("key2") == b"\x00\x00\x00\x00\x00\x00Redis"
    assert await r.setrange("key3", 0, "") == 0
    assert await r.exists("key3") == 0


async def test_counters_as_documented(r: aredis.Redis) -> None:
    await r.set("mykey", "10")
    assert await r.incr("mykey") == 11
    assert await r.get("mykey") == b"11"
    assert await r.decr("mykey") == 10
    assert await r.incrby("mykey", 5) == 15
    assert await r.decrby("mykey", 20) == -5
    assert await r.incr("fresh") == 1
    await r.set("big", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="^increment or decrement would overflow$"):
        await r.incr("big")
    assert await r.get("big") == str(2**63 - 1).encode()
    await r.set("small", str(-(2**63)))
    with pytest.raises(redis.ResponseError, match="^increment or decrement would overflow$"):
        await r.decr("small")
    with pytest.raises(redis.ResponseError, match="^decrement would overflow$"):
        await _cmd(r, "DECRBY", "x", str(-(2**63)))
    for bad in ("abc", " 1", "1 ", "01", "+1", "-0", "1.0", "99999999999999999999"):
        await r.set("bad", bad)
        with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
            await r.incr("bad")
    await r.set("ttl", "1", ex=100)
    await r.incr("ttl")
    assert 99 <= await r.ttl("ttl") <= 100  # INCR keeps the expiry
    await r.set("f", "10.50")
    assert await r.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    assert await r.get("f") == b"10.6"
    assert await r.incrbyfloat("f", -5) == pytest.approx(5.6)
    await r.set("f", "5.0e3")
    await r.incrbyfloat("f", 2.0e2)
    assert await r.get("f") == b"5200"
    with pytest.raises(redis.ResponseError, match="^increment would produce NaN or Infinity$"):
        await _cmd(r, "INCRBYFLOAT", "f", "inf")


# -- keyspace -------------------------------------------------------------------------------


async def test_del_exists_touch_type_unlink(r: aredis.Redis) -> None:
    await r.mset({"key1": "Hello", "key2": "World"})
    assert await r.exists("key1") == 1
    assert await r.exists("nosuchkey") == 0
    assert await r.exists("key1", "key2", "nosuchkey", "key1") == 3
    assert await r.touch("key1", "key2", "nope") == 2
    assert await r.type("key1") == b"string"
    assert await r.type("nope") == b"none"
    assert await r.delete("key1", "key2", "key3") == 2
    await r.set("u", "1")
    assert await r.unlink("u", "v") == 1


async def test_expire_family_with_its_conditions(r: aredis.Redis) -> None:
    await r.set("mykey", "Hello")
    assert await r.expire("mykey", 10) is True
    assert await r.ttl("mykey") == 10
    await r.set("mykey", "Hello World")
    assert await r.ttl("mykey") == -1
    assert await r.expire("mykey", 10, xx=True) is False
    assert await r.ttl("mykey") == -1
    assert await r.expire("mykey", 10, nx=True) is True
    assert await r.ttl("mykey") == 10
    assert await r.expire("mykey", 5, gt=True) is False
    assert await r.expire("mykey", 20, gt=True) is True
    assert await r.expire("mykey", 30, lt=True) is False
    assert await r.expire("mykey", 15, lt=True) is True
    assert await r.expire("mykey", 15, xx=True, lt=True) is False  # equal is not less
    await r.set("plain", "v")
    assert await r.expire("plain", 5, gt=True) is False  # no TTL is an infinite one
    assert await r.expire("plain", 5, lt=True) is True
    assert await r.expire("none", 5) is False
    assert await r.pexpire("mykey", 100_000) is True
    assert 99_000 < await r.pttl("mykey") <= 100_000
    at = int(time.time()) + 500
    assert await r.expireat("mykey", at) is True
    assert await r.expiretime("mykey") == at
    assert await r.pexpireat("mykey", at * 1000) is True
    assert await r.persist("mykey") is True
    assert await r.persist("mykey") is False
    assert await r.ttl("mykey") == -1
    assert await r.ttl("none") == -2
    assert await r.pttl("none") == -2
    assert await r.expiretime("none") == -2
    assert await r.expire("mykey", -1) is True  # a time in the past deletes the key
    assert await r.exists("mykey") == 0
    with pytest.raises(redis.ResponseError, match="^NX and XX, GT or LT options at the same"):
        await _cmd(r, "EXPIRE", "k", "1", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="^GT and LT options at the same time"):
        await _cmd(r, "EXPIRE", "k", "1", "GT", "LT")
    with pytest.raises(redis.ResponseError, match="^Unsupported option FOO$"):
        await _cmd(r, "EXPIRE", "k", "1", "FOO")


async def test_expired_keys_are_gone(r: aredis.Redis) -> None:
    await r.set("short", "v", px=1)
    await wait_for_async(lambda: r.exists("short"), 0)
    assert await r.get("short") is None
    assert await r.ttl("short") == -2


async def wait_for_async(probe: Any, expect: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await probe()) != expect:
        assert time.monotonic() < deadline, f"still {got!r}, not {expect!r}"
        await asyncio.sleep(0.01)


async def test_rename_renamenx_copy(r: aredis.Redis) -> None:
    await r.set("mykey", "Hello", ex=100)
    assert await r.rename("mykey", "myotherkey") is True
    assert await r.get("myotherkey") == b"Hello"
    assert await r.exists("mykey") == 0
    assert 99 <= await r.ttl("myotherkey") <= 100  # the TTL goes with the value
    with pytest.raises(redis.ResponseError, match="^no such key$"):
        await r.rename("mykey", "x")
    await r.set("a", "1")
    await r.set("b", "2")
    assert await r.renamenx("a", "b") is False
    assert await r.renamenx("a", "c") is True
    assert await r.get("c") == b"1"
    assert await r.copy("c", "d") is True
    assert await r.copy("c", "b") is False
    assert await r.copy("c", "b", replace=True) is True
    assert await r.get("b") == b"1"
    assert await r.copy("none", "e") is False
    with pytest.raises(redis.ResponseError, match="^DB index is out of range$"):
        await r.copy("c", "f", destination_db="1")


async def test_keys_patterns_as_documented(r: aredis.Redis) -> None:
    for key in ("hello", "hallo", "hxllo", "hllo", "heeeello", "firstname", "lastname", "age"):
        await r.set(key, "v")
    assert sorted(await r.keys("h?llo")) == [b"hallo", b"hello", b"hxllo"]
    assert sorted(await r.keys("h*llo")) == [b"hallo", b"heeeello", b"hello", b"hllo", b"hxllo"]
    assert sorted(await r.keys("h[ae]llo")) == [b"hallo", b"hello"]
    assert sorted(await r.keys("h[^e]llo")) == [b"hallo", b"hxllo"]
    assert sorted(await r.keys("h[a-b]llo")) == [b"hallo"]
    assert sorted(await r.keys("*name*")) == [b"firstname", b"lastname"]
    assert sorted(await r.keys("a??")) == [b"age"]
    assert len(await r.keys("*")) == 8
    assert await r.dbsize() == 8


async def test_scan_visits_every_key_once(r: aredis.Redis) -> None:
    keys = {f"user:{i}".encode() for i in range(300)} | {f"other:{i}".encode() for i in range(50)}
    await r.mset({k: b"v" for k in keys})
    seen: list[Any] = []
    cursor = 0
    calls = 0
    while True:
        cursor, batch = await r.scan(cursor, match="user:*", count=20)
        seen += batch
        calls += 1
        if cursor == 0:
            break
    assert sorted(seen) == sorted(k for k in keys if k.startswith(b"user:"))
    assert calls > 1
    assert {k async for k in r.scan_iter(count=100)} == keys
    assert [k async for k in r.scan_iter(_type="list")] == []
    with pytest.raises(redis.ResponseError, match="^invalid cursor$"):
        await _cmd(r, "SCAN", "abc")
    assert await r.randomkey() in keys


async def test_flushall_empties_the_cluster(r: aredis.Redis) -> None:
    assert await r.randomkey() is None
    await r.mset({f"k{i}": "v" for i in range(40)})
    assert await r.flushall() is True
    assert await r.dbsize() == 0
    await r.mset({f"k{i}": "v" for i in range(10)})
    assert await r.flushdb(asynchronous=True) is True
    await wait_for_async(r.dbsize, 0)
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        await _cmd(r, "FLUSHALL", "LATER")


# -- connection and introspection ----------------------------------------------------------


async def test_connection_commands(r: aredis.Redis) -> None:
    assert await r.ping() is True
    assert await r.echo("Hello World!") == b"Hello World!"
    assert await _cmd(r, "SELECT", 0) in (b"OK", "OK", True)
    with pytest.raises(redis.ResponseError, match="^DB index is out of range$"):
        await _cmd(r, "SELECT", 1)
    assert await r.client_setname("myname") is True
    assert await r.client_getname() in (b"myname", "myname")
    client_id = await r.client_id()
    assert isinstance(client_id, int)
    info = await r.client_info()
    assert info["name"] == "myname" and int(info["id"]) == client_id
    assert any(int(c["id"]) == client_id for c in await r.client_list())
    with pytest.raises(redis.ResponseError, match="^Client names cannot contain spaces"):
        await r.client_setname("my name")
    with pytest.raises(
        redis.ResponseError, match=r"^unknown subcommand 'NOPE'\. Try CLIENT HELP\.$"
    ):
        await _cmd(r, "CLIENT", "NOPE")


async def test_unknown_commands_get_redis_s_error(r: aredis.Redis) -> None:
    with pytest.raises(
        redis.ResponseError,
        match=r"^unknown command 'FOO', with args beginning with: 'bar' 'baz' $",
    ):
        await _cmd(r, "FOO", "bar", "baz")
    with pytest.raises(redis.ResponseError, match=r"^unknown command 'LPUSH', with args"):
        await _cmd(r, "LPUSH", "l", "x")


async def test_introspection(r: aredis.Redis) -> None:
    count_ = await r.command_count()
    assert count_ > 50
    info = await r.info()
    assert info["redis_mode"] == "standalone"
    assert "gridkv_version" in info and "node_id" in info
    await r.set("k", "v")
    assert (await r.info("keyspace"))["db0"]["keys"] == 1
    seconds, micros = await r.time()
    assert abs(seconds - time.time()) < 5 and 0 <= micros < 1_000_000
    assert await r.config_get("save") == {"save": ""}
    assert (await r.config_get("maxmemory*")).keys() >= {"maxmemory", "maxmemory-policy"}
    commands = await r.command()
    assert commands["get"]["arity"] == 2


async def test_hello_switches_protocols(door: RespServer) -> None:
    client = _client(_port(door), protocol=3)
    try:
        await client.set("k", "v")
        hello = await _cmd(client, "HELLO", "3")
        assert hello[b"proto"] == 3 and hello[b"server"] == b"redis"
        assert hello[b"mode"] == b"standalone"
        with pytest.raises(redis.ResponseError, match="^NOPROTO unsupported protocol version$"):
            await _cmd(client, "HELLO", "4")
    finally:
        await client.aclose()
    hello = await _raw(door, b"HELLO 3\r\nGET missing\r\n")
    assert hello.startswith(b"%7\r\n") and hello.endswith(b"_\r\n")
    await _check(door, b"GET missing\r\n", b"$-1\r\n")


async def test_passwords_and_users() -> None:
    kv, server = await _door(password="s3cret", users=["alice:wonder"])
    port = _port(server)
    try:
        anonymous = _client(port)
        with pytest.raises(redis.AuthenticationError):
            await anonymous.get("k")
        with pytest.raises(redis.AuthenticationError):
            await _client(port, password="wrong").ping()
        good = _client(port, password="s3cret")
        assert await good.set("k", "v")
        # Once authenticated, the limits on requests are those of everyone.
        assert await good.mset({f"m{i}": "x" * 20_000 for i in range(8)})
        alice = _client(port, username="alice", password="wonder")
        assert await alice.get("k") == b"v"
        assert (await alice.client_info())["user"] == "alice"
        for client in (anonymous, good, alice):
            await client.aclose()
        await _check(server, b"PING\r\n", b"-NOAUTH Authentication required.\r\n")
        # Before AUTH, a request may not be large.
        closed = await _raw(server, b"*11\r\n" + b"$1\r\na\r\n" * 11, expect_close=True)
        assert closed == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    finally:
        await server.close()
        await kv.close()


async def test_auth_without_a_password_configured(r: aredis.Redis) -> None:
    with pytest.raises(redis.AuthenticationError, match="^AUTH <password> called without any"):
        await _cmd(r, "AUTH", "x")


async def test_ping_and_command_docs_raw(door: RespServer) -> None:
    await _check(door, b"PING hi\r\n", b"$2\r\nhi\r\n")
    assert (await _raw(door, b"COMMAND DOCS get\r\n")).startswith(b"*2\r\n$3\r\nget\r\n*6\r\n")
    await _check(door, b"COMMAND GETKEYS SET a b\r\n", b"*1\r\n$1\r\na\r\n")


async def test_quit_and_reset(door: RespServer) -> None:
    await _check(
        door, b"CLIENT SETNAME a\r\nRESET\r\nCLIENT GETNAME\r\n", b"+OK\r\n+RESET\r\n$-1\r\n"
    )
    assert await _raw(door, b"PING\r\nQUIT\r\nPING\r\n", expect_close=True) == b"+PONG\r\n+OK\r\n"


# -- pipelines, malformed input and limits --------------------------------------------------


async def test_a_long_pipeline_is_answered_in_order(r: aredis.Redis) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.set(f"p{i}", i)
            pipe.incr(f"p{i}")
            pipe.get(f"p{i}")
        results = await pipe.execute()
    assert results[2::3] == [str(i + 1).encode() for i in range(2000)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n*1\r\n$1\r\na\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
        (b"*2\r\n$3\r\nGET\r\n:5\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b'SET a "b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"SET a 'b'c\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"*1\r\n$4\r\nPING\r\n+x\r\n", b"+PONG\r\n-ERR Protocol error: expected '*', got '$'\r\n"),
        (b"x" * 70_000, b"-ERR Protocol error: too big inline request\r\n"),
    ],
)
async def test_malformed_requests_get_an_error_and_close(
    door: RespServer, data: bytes, error: bytes
) -> None:
    assert await _raw(door, data, expect_close=True) == error
    await _check(door, b"PING\r\n", b"+PONG\r\n")  # the door goes on


async def test_inline_commands(door: RespServer) -> None:
    data = b'SET k "a\\x41 b"\r\nGET k\r\n\r\nEXISTS k k\n'
    await _check(door, data, b"+OK\r\n$4\r\naA b\r\n:2\r\n")


async def test_keys_gridkv_cannot_store_are_refused(r: aredis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="^GridKV does not store the empty key$"):
        await r.set("", "v")
    with pytest.raises(redis.ResponseError, match="^GridKV keys are UTF-8 text"):
        await r.set(b"\xff\xfe", "v")
    with pytest.raises(redis.ResponseError, match="max_key_bytes"):
        await r.get("k" * 5000)


async def test_limits_cut_the_client_and_spare_the_node() -> None:
    kv, server = await _door(
        max_args=5, max_query_bytes=4096, max_clients=3, max_output_bytes=65536
    )
    try:
        too_many = b"*6\r\n" + b"$1\r\na\r\n" * 6
        assert await _raw(server, too_many, expect_close=True) == (
            b"-ERR Protocol error: invalid multibulk length\r\n"
        )
        # A bulk larger than the query buffer: cut, unanswered.
        assert await _raw(server, b"*2\r\n$3\r\nGET\r\n$100000\r\n" + b"x" * 5000, True) == b""
        # More clients than allowed: the extra one is refused.
        held = [await asyncio.open_connection("127.0.0.1", _port(server)) for _ in range(3)]
        assert await _raw(server, b"PING\r\n", expect_close=True) == (
            b"-ERR max number of clients reached\r\n"
        )
        for _, writer in held:
            writer.close()
        await wait_for_async(lambda: _count(server), 0)
        # A client that sends and never reads: cut once its replies pass the output bound.
        await kv.set("big", b"x" * 60_000)
        sock = socket.create_connection(("127.0.0.1", _port(server)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 50
        loop = asyncio.get_running_loop()
        for _ in range(40):
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, request), 1)
            except (TimeoutError, ConnectionError, OSError):
                break
        await wait_for_async(lambda: _count(server), 0)
        sock.close()
        await _check(server, b"PING\r\n", b"+PONG\r\n")
    finally:
        await server.close()
        await kv.close()


async def _count(server: RespServer) -> int:
    return len(server.door.clients)


async def test_closing_the_door_lets_commands_under_way_finish(door: RespServer) -> None:
    port = _port(door)
    client = _client(port)
    await client.set("n", 0)
    # Commands under way when the door closes finish and are answered.
    increments = [asyncio.ensure_future(client.incr("n")) for _ in range(50)]
    await asyncio.sleep(0)
    await door.close()
    done = await asyncio.gather(*increments, return_exceptions=True)
    answered = [n for n in done if isinstance(n, int)]
    assert sorted(answered) == list(range(1, len(answered) + 1))
    assert await door.door.kv.get("n") == str(len(answered)).encode()
    with pytest.raises(redis.ConnectionError):
        await _client(port).ping()
    await client.aclose()


async def test_status_get_set_and_del_through_the_door(
    door: RespServer, capsys: pytest.CaptureFixture[str]
) -> None:
    address = door.address

    async def cli(*args: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, [*args, "--addr", address])
        return code, capsys.readouterr().out

    assert await cli("set", "greeting", "hello", "--ttl", "100") == (0, "OK\n")
    assert await cli("get", "greeting") == (0, "hello\n")
    assert 99 <= (await door.door.entry("greeting") or (b"", 0))[1] / 1000 - time.time() <= 100
    assert await cli("del", "greeting", "other") == (0, "1\n")
    assert await cli("get", "greeting") == (1, "(nil)\n")
    code, out = await cli("status", "--json")
    status = json.loads(out)
    assert code == 0 and status["ready"] is True
    (member,) = status["members"]
    assert member["node_id"] == door.door.node.node_id and member["state"] == "alive"
    assert member["partitions"] == member["primaries"] == door.door.options.partition_count
    code, out = await cli("status")
    assert code == 0 and door.door.node.node_id in out and "alive" in out
    # A door that is not there: an error naming it, exit 1.
    assert await asyncio.to_thread(main, ["get", "k", "--addr", "127.0.0.1:1"]) == 1
    assert "cannot reach the RESP door at 127.0.0.1:1" in capsys.readouterr().err


async def test_values_over_max_value_bytes_are_refused_and_store_nothing(r: aredis.Redis) -> None:
    largest = 4 * 1024 * 1024  # the default max_value_bytes
    error = f"^value is {largest + 1} bytes; GridKV's max_value_bytes is {largest}$"
    for write in (
        lambda: r.set("big", b"x" * (largest + 1)),
        lambda: r.set("big", b"x" * (largest + 1), nx=True),
        lambda: _cmd(r, "SETNX", "big", b"x" * (largest + 1)),
        lambda: r.set("big", b"x" * (largest + 1), ex=10),
        lambda: r.mset({"big": b"x" * (largest + 1)}),
    ):
        with pytest.raises(redis.ResponseError, match=error):
            await write()
    assert await r.exists("big") == 0
    await r.set("big", b"x" * largest)
    with pytest.raises(
        redis.ResponseError, match=r"^string exceeds maximum allowed size \(proto-max-bulk-len\)$"
    ):
        await r.append("big", "y")
    assert await r.strlen("big") == largest


async def test_a_pipeline_sent_whole_before_reading_is_served(door: RespServer) -> None:
    # Regression: the door stopped reading once 256 KiB of replies were unread, and a client
    # that sends everything before it reads (as redis-py's pipeline does) waited forever.
    await door.door.kv.set("k", b"v" * 100)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(door))
    count_ = 500_000
    writer.write(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * count_)
    await asyncio.wait_for(writer.drain(), 20)
    reply = b"$100\r\n" + b"v" * 100 + b"\r\n"
    got = await asyncio.wait_for(reader.readexactly(len(reply) * count_), 20)
    assert got == reply * count_
    writer.close()


async def test_replies_past_the_output_bound_cut_the_client_as_they_are_made() -> None:
    # Regression: the bound was checked once a whole batch of replies had been made, so one
    # read of GETs of a large value could take gigabytes first.
    kv, server = await _door(max_output_bytes=1 << 20)
    try:
        await kv.set("big", b"x" * (256 * 1024))
        before = server.door.commands_processed
        _reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        writer.write(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 400)  # 100 MiB of replies
        await wait_for_async(lambda: _count(server), 0)
        assert server.door.commands_processed - before < 40
        writer.close()
        await _check(server, b"PING\r\n", b"+PONG\r\n")
    finally:
        await server.close()
        await kv.close()


async def test_before_auth_a_command_may_not_grow_past_256_kib() -> None:
    # Regression: a client without the password could make the door hold a 64 MiB command
    # in progress (an array header of 100 million, then elements), each connection.
    kv, server = await _door(password="s3cret")
    try:
        data = b"*100000000\r\n" + b"$2\r\nab\r\n" * 40_000  # 320 KB, no complete command
        assert await _raw(server, data, expect_close=True) == b""
        client = _client(_port(server), password="s3cret")
        assert await client.ping()
        await client.aclose()
    finally:
        await server.close()
        await kv.close()


# -- from a hostile review: each fails on the code before its fix ---------------------------


async def test_flushall_async_spares_what_is_written_after_it(door: RespServer) -> None:
    await _check(
        door,
        b"SET a 1\r\nSET b old\r\nFLUSHALL ASYNC\r\nSET b 2\r\nSET c 3\r\n",
        b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n",
    )
    client = _client(_port(door))
    await wait_for_async(lambda: client.exists("a"), 0)
    assert await client.mget("a", "b", "c") == [None, b"2", b"3"]
    await client.aclose()


async def test_a_key_named_twice_in_mset_or_msetnx_takes_its_last_value(r: aredis.Redis) -> None:
    assert await _cmd(r, "MSETNX", "x", "1", "x", "2") == 1
    assert await r.get("x") == b"2"
    assert await _cmd(r, "MSET", "y", "1", "y", "2", "y", "3") in (b"OK", "OK", True)
    assert await r.get("y") == b"3"


async def test_rename_puts_the_value_back_when_the_target_cannot_be_written(
    door: RespServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(_port(door))
    await client.set("source", "precious", ex=100)
    mutate = door.door.mutate

    async def failing(key: str, op: str, args: list[Any]) -> Any:
        if key == "target" and op == "set":
            raise PeerUnavailable("the target's owner is gone")
        return await mutate(key, op, args)

    monkeypatch.setattr(door.door, "mutate", failing)
    with pytest.raises(redis.ResponseError, match="the target's owner is gone$"):
        await client.rename("source", "target")
    assert await client.get("source") == b"precious"
    assert 99 <= await client.ttl("source") <= 100
    await client.aclose()


@pytest.mark.parametrize(
    ("start", "increment", "result"),
    [
        ("0.1", "0.2", "0.3"),
        ("10.50", "0.1", "10.6"),
        ("5.0e3", "2.0e2", "5200"),
        ("0", "0x10", "16"),
        ("0", "1e-20", "0"),
        ("9007199254740993", "0", "9007199254740993"),
        ("1e308", "1e308", "2" + "0" * 308),
        ("3", "-3", "0"),
    ],
)
async def test_incrbyfloat_computes_and_prints_as_redis(
    r: aredis.Redis, start: str, increment: str, result: str
) -> None:
    await r.set("f", start)
    await _cmd(r, "INCRBYFLOAT", "f", increment)
    assert await r.get("f") == result.encode()


async def test_incrbyfloat_refuses_what_redis_refuses(r: aredis.Redis) -> None:
    for bad in ("1_0", " 1", "1 ", "nan", "abc", ""):
        with pytest.raises(redis.ResponseError, match="^value is not a valid float$"):
            await _cmd(r, "INCRBYFLOAT", "f", bad)


async def test_an_unknown_command_s_error_shows_128_bytes_of_arguments(door: RespServer) -> None:
    args = b" ".join([b"NOPE", *(b"x" * 50 for _ in range(1000))])
    shown = b"'" + b"x" * 50 + b"' '" + b"x" * 50 + b"' '" + b"x" * 22 + b"' "
    await _check(
        door,
        args + b"\r\n",
        b"-ERR unknown command 'NOPE', with args beginning with: " + shown + b"\r\n",
    )


async def test_the_default_user_takes_any_password_when_it_has_none(door: RespServer) -> None:
    await _check(door, b"AUTH default whatever\r\n", b"+OK\r\n")
    client = _client(_port(door), protocol=3, username="default", password="anything")
    assert await client.ping()
    await client.aclose()


async def test_a_door_whose_address_is_taken_says_so(door: RespServer) -> None:
    other = RespServer(door.door.kv, door.address)
    with pytest.raises(ConfigError, match=r"^config key 'resp.listen': cannot listen on"):
        await other.start()


async def test_a_client_that_half_closes_gets_every_reply(door: RespServer) -> None:
    # Regression: at the client's EOF the transport closed and the commands still waiting
    # were cancelled unanswered (as `printf ... | nc -N` sends them).
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(door))
    writer.write(b"INCR n\r\n" * 50 + b"GET n\r\n")
    writer.write_eof()
    got = await asyncio.wait_for(reader.read(), 10)  # until the door closes
    assert got == b"".join(b":%d\r\n" % i for i in range(1, 51)) + b"$2\r\n50\r\n"
    writer.close()


async def test_flushall_deletes_a_large_keyspace_with_bounded_work(
    door: RespServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: FLUSHALL made one task per key at once (300k keys took half a GiB and
    # stalled the node long enough for its peers to declare it dead).
    client = _client(_port(door))
    await client.mset({f"k{i}": "v" for i in range(2000)})
    node = door.door.node
    mutate = node.mutate
    most = 0

    async def counting(partition: int, key: str, op: str, args: list[Any], level: str) -> Any:
        nonlocal most
        most = max(most, len(asyncio.all_tasks()))
        return await mutate(partition, key, op, args, level)

    monkeypatch.setattr(node, "mutate", counting)
    assert await client.flushall() is True
    assert await client.dbsize() == 0
    assert most < 200
    await client.aclose()
