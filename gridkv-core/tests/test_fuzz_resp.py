"""Fuzzing the RESP door's request parser: whatever bytes come, in whatever pieces, it yields
commands or Redis's protocol error, nothing else; well-formed requests come back as sent; and
a running door answers junk with an error and goes on serving.

Example counts come from ``fuzz_examples`` (``GRIDKV_FUZZ_EXAMPLES``); ``nox -s fuzz`` runs
them at 100,000.
"""

from __future__ import annotations

import asyncio

import pytest
from gridkv import AsyncGridKV
from gridkv.service.resp import RespServer
from gridkv.service.resp.protocol import QueryTooLong, RequestParser, RespError
from gridkv.testing.fuzz import fuzz_examples
from gridkv.testing.transports import node_options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

# Bytes that matter to RESP, so random input often looks almost right.
_RESP_BYTES = st.sampled_from(
    [
        *(b"*", b"$", b"\r\n", b"\n", b"-1", b"0", b"3", b"99999999999", b"+", b":", b"_"),
        *(b"PING", b'"', b"'", b"\\x4", b" ", b"\x00"),
    ]
)
_JUNK = st.lists(st.one_of(_RESP_BYTES, st.binary(max_size=8)), max_size=40).map(b"".join)


def _feed(data: bytes, cuts: list[int], max_args: int = 64) -> list[list[bytes]]:
    """``data`` through a parser in pieces cut at ``cuts``; the commands it gave."""
    parser = RequestParser(max_args, 1 << 20)
    commands: list[list[bytes]] = []
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        parser.feed(data[start:end])
        while (command := parser.next()) is not None:
            assert command and all(type(a) is bytes for a in command)
            commands.append(command)
    return commands


@settings(max_examples=fuzz_examples(), deadline=None)
@given(data=_JUNK, cuts=st.lists(st.integers(0, 1000), max_size=6))
def test_any_input_gives_commands_or_a_protocol_error(data: bytes, cuts: list[int]) -> None:
    error = ""
    try:
        _feed(data, cuts)
    except RespError as exc:
        error = exc.message
    except QueryTooLong:  # pragma: no cover - the inputs are far below the bound
        return
    assert not error or error.startswith("ERR Protocol error: ")


def _encode(command: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in command)


@settings(max_examples=fuzz_examples(), deadline=None)
@given(
    commands=st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=6), max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_well_formed_requests_come_back_as_sent(
    commands: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(_encode(c) for c in commands)
    assert _feed(data, cuts) == commands


@settings(max_examples=fuzz_examples(), deadline=None)
@given(
    words=st.lists(
        st.lists(st.text("abcXYZ019:_-", min_size=1, max_size=6), min_size=1, max_size=4),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_inline_commands_split_on_spaces(words: list[list[str]], cuts: list[int]) -> None:
    data = b"".join((" ".join(line) + "\r\n").encode() for line in words)
    assert _feed(data, cuts) == [[w.encode() for w in line] for line in words]


@settings(
    max_examples=max(20, fuzz_examples() // 10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(junk=_JUNK)
def test_a_door_answers_junk_and_goes_on(junk: bytes) -> None:
    async def run() -> None:
        kv = AsyncGridKV(**node_options("fuzzdoor"))
        await kv.start()
        server = RespServer(kv, "127.0.0.1:0")
        await server.start()
        port = int(server.address.rpartition(":")[2])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk + b"\r\n")
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(1 << 16), 0.2)
            except TimeoutError:
                pass  # a command still incomplete: the door waits for the rest
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            assert await asyncio.wait_for(reader.readexactly(7), 5) == b"+PONG\r\n"
            writer.close()
        finally:
            await server.close()
            await kv.close()

    asyncio.run(run())
