from __future__ import annotations

import asyncio
import json
import random
import threading
from datetime import timedelta
from itertools import count
from typing import Any

import gridkv
import pytest
from gridkv import (
    AsyncGridKV,
    ConfigError,
    EmptyKey,
    GridKV,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    MemoryLimitExceeded,
    NotReady,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
)
from gridkv.testing.transports import node_options, transport_under_test
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

_ids = count()


def single(**overrides: Any) -> dict[str, Any]:
    """Options of a single node on the transport under test (GRIDKV_TEST_TRANSPORT)."""
    base = node_options(f"n{next(_ids)}")
    base.update(overrides)
    return base


def own_transport(address: str, net: MemoryNetwork | None = None) -> MemoryTransport:
    return MemoryTransport(address, net or MemoryNetwork(), timeout=0.2)


# -- the asyncio API --------------------------------------------------------------------------


async def test_async_set_get_delete() -> None:
    async with AsyncGridKV(**single()) as kv:
        await kv.wait_ready(timeout=5)
        await kv.set("user:1", b"alice")
        assert await kv.get("user:1") == b"alice"
        await kv.set("user:1", bytearray(b"bob"))
        assert await kv.get("user:1") == b"bob"
        await kv.delete("user:1")
        assert await kv.get("user:1") is None
        await kv.delete("never-existed")
        assert await kv.get("missing") is None


async def test_values_come_back_as_bytes_whatever_went_in() -> None:
    async with AsyncGridKV(**single()) as kv:
        await kv.set("mv", memoryview(b"view"))
        value = await kv.get("mv")
        assert type(value) is bytes and value == b"view"


async def test_ttl_in_seconds_and_timedelta_expires() -> None:
    async with AsyncGridKV(**single()) as kv:
        await kv.set("a", b"1", ttl=0.05)
        await kv.set("b", b"2", ttl=timedelta(milliseconds=50))
        await kv.set("c", b"3", ttl=0)
        assert await kv.get("a") == b"1"
        await wait_until(lambda: _expired(kv, "a", "b"))
        assert await kv.get("a") is None
        assert await kv.get("b") is None
        assert await kv.get("c") == b"3"
        assert kv.stats().storage.expirations == 2
        assert kv.stats().storage.keys == 1


def _expired(kv: AsyncGridKV, *keys: str) -> bool:
    node = kv.node
    return all(node.storage.get(node.table.partition_of(k), k) is None for k in keys)


async def test_default_ttl_from_options_applies_when_ttl_is_none() -> None:
    async with AsyncGridKV(**single(ttl="50ms")) as kv:
        await kv.set("a", b"1")
        await kv.set("b", b"2", ttl=0)
        await wait_until(lambda: _expired(kv, "a"))
        assert await kv.get("b") == b"2"


async def test_expired_keys_are_swept_in_the_background() -> None:
    async with AsyncGridKV(**single(storage={"expiry_interval": "10ms"})) as kv:
        for i in range(100):
            await kv.set(f"k{i}", b"v", ttl=0.02)
        await wait_until(lambda: kv.stats().storage.keys == 0)
        assert kv.stats().storage.used_bytes == 0


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        (b"bytes", InvalidKey, "keys are str, got bytes"),
        (42, InvalidKey, "got int"),
        (None, InvalidKey, "got NoneType"),
        ("", EmptyKey, "empty"),
        ("k" * 1025, KeyTooLarge, "1025 bytes in UTF-8, more than max_key_bytes=1024"),
        ("я" * 513, KeyTooLarge, "1026 bytes"),
        ("\ud800", InvalidKey, "not valid Unicode"),
    ],
)
async def test_bad_keys_raise_named_errors_on_every_method(
    key: object, error: type, match: str
) -> None:
    async with AsyncGridKV(**single()) as kv:
        with pytest.raises(error, match=match):
            await kv.get(key)  # type: ignore[arg-type]
        with pytest.raises(error, match=match):
            await kv.set(key, b"v")  # type: ignore[arg-type]
        with pytest.raises(error, match=match):
            await kv.delete(key)  # type: ignore[arg-type]
        assert kv.stats().storage.keys == 0


async def test_bad_values_and_arguments_raise_named_errors_and_keep_the_old_value() -> None:
    async with AsyncGridKV(**single(max_value_bytes=1000)) as kv:
        await kv.set("k", b"old")
        with pytest.raises(InvalidValue, match=r"got str; encode text first"):
            await kv.set("k", "text")  # type: ignore[arg-type]
        with pytest.raises(InvalidValue, match="got NoneType"):
            await kv.set("k", None)  # type: ignore[arg-type]
        with pytest.raises(ValueTooLarge, match="1001 bytes, more than max_value_bytes=1000"):
            await kv.set("k", b"x" * 1001)
        with pytest.raises(InvalidArgument, match="ttl .* must be 0 or positive"):
            await kv.set("k", b"v", ttl=-1)
        with pytest.raises(InvalidArgument, match="ttl"):
            await kv.set("k", b"v", ttl="soon")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="longer than 100 years"):
            await kv.set("k", b"v", ttl=1e30)
        with pytest.raises(InvalidArgument, match="longer than 100 years"):
            await kv.set("k", b"v", ttl=timedelta.max)
        with pytest.raises(InvalidArgument, match="ttl"):
            await kv.set("k", b"v", ttl=float("nan"))
        with pytest.raises(InvalidArgument, match="consistency must be one of"):
            await kv.get("k", consistency="some")
        assert await kv.get("k") == b"old"


async def test_value_errors_are_also_standard_exceptions() -> None:
    async with AsyncGridKV(**single()) as kv:
        with pytest.raises(ValueError):  # noqa: PT011
            await kv.set("", b"v")
        with pytest.raises(TypeError):
            await kv.set(1, b"v")  # type: ignore[arg-type]


async def test_quorum_and_all_are_refused_when_the_replicas_do_not_exist() -> None:
    async with AsyncGridKV(**single(replica_count=3)) as kv:
        with pytest.raises(QuorumNotReached, match="needs 2 of replica_count=3 replicas, and 1"):
            await kv.set("k", b"v", consistency="quorum")
        with pytest.raises(QuorumNotReached, match="needs 3"):
            await kv.get("k", consistency="all")
        assert await kv.get("k") is None
    async with AsyncGridKV(**single(replica_count=1)) as kv:
        await kv.set("k", b"v", consistency="all")
        assert await kv.get("k", consistency="quorum") == b"v"


async def test_memory_limit_is_an_error_through_the_api() -> None:
    async with AsyncGridKV(**single(storage={"max_memory_mb": 1}, max_value_bytes=100_000)) as kv:
        noise = random.Random(1).randbytes(90_000)  # incompressible, so lz4 cannot help
        with pytest.raises(MemoryLimitExceeded, match="max_memory_mb"):
            for i in range(100):
                await kv.set(f"k{i}", noise)
        assert kv.stats().storage.used_bytes <= 1 << 20


async def test_close_is_idempotent_and_later_calls_raise_shutting_down() -> None:
    kv = AsyncGridKV(**single())
    await kv.start()
    await kv.set("k", b"v")
    await kv.close()
    await kv.close()
    for call in (
        kv.get("k"),
        kv.set("k", b"v"),
        kv.delete("k"),
        kv.wait_ready(1),
        kv.health_check(),
    ):
        with pytest.raises(ShuttingDown, match="is closed"):
            await call
    with pytest.raises(ShuttingDown):
        await kv.start()


async def test_calls_before_start_raise_not_ready() -> None:
    kv = AsyncGridKV(**single())
    with pytest.raises(NotReady, match="not started"):
        await kv.get("k")
    await kv.close()


async def test_stats_describe_the_node() -> None:
    async with AsyncGridKV(**single(local_node_id="stats-node")) as kv:
        await kv.set("a", b"1")
        await kv.set("b", b"2")
        await kv.delete("b")
        stats = kv.stats()
        assert stats.cluster.ready
        assert stats.cluster.local_node_id == "stats-node"
        assert stats.cluster.cluster_size == 1
        assert stats.cluster.healthy_nodes == 1
        assert stats.cluster.replica_factor == 3
        assert stats.cluster.peer_count == 0
        assert [m.node_id for m in stats.cluster.members] == ["stats-node"]
        assert stats.network.type == transport_under_test()
        assert stats.storage.keys == 1
        assert stats.storage.tombstones == 1
        assert 0 < stats.storage.used_bytes < 1000  # two small records, each charged once
        assert stats.version == gridkv.__version__
        table = stats.format_table()
        assert "cluster.local_node_id" in table and "stats-node" in table
        data = json.loads(json.dumps(stats.to_dict()))
        assert data["cluster"]["local_node_id"] == "stats-node"
        assert [m["node_id"] for m in data["cluster"]["members"]] == ["stats-node"]
        assert (data["storage"]["keys"], data["storage"]["tombstones"]) == (1, 1)


async def test_health_check_passes_on_a_running_single_node() -> None:
    async with AsyncGridKV(**single()) as kv:
        await kv.health_check()


# -- seeds and authentication -----------------------------------------------------------------


def test_seeds_without_a_trust_root_are_refused_saying_how_to_make_one() -> None:
    with pytest.raises(ConfigError, match=r"'auth'.*needs a trust root.*`gridkv keys new`"):
        AsyncGridKV(**single(seed_addrs=["other:1"]))


async def test_unreachable_seeds_make_wait_ready_fail_naming_them() -> None:
    net = MemoryNetwork()
    opts = single(seed_addrs=["ghost-1:7946", "ghost-2:7946"], disable_auth=True)
    transport = own_transport(str(opts["local_address"]), net)
    async with AsyncGridKV(**opts, transport=transport) as kv:
        with pytest.raises(NotReady, match=r"ghost-1:7946: PeerUnavailable.*ghost-2:7946") as info:
            await kv.wait_ready(timeout=0.3)
        assert isinstance(info.value, TimeoutError)
        assert not kv.stats().cluster.ready


async def test_health_check_fails_after_the_grace_period_without_seeds() -> None:
    net = MemoryNetwork()
    opts = single(seed_addrs=["ghost:1"], disable_auth=True, startup_grace_period=0.05)
    async with AsyncGridKV(**opts, transport=own_transport(str(opts["local_address"]), net)) as kv:
        await asyncio.sleep(0)
        await wait_until(lambda: _unhealthy(kv))
        with pytest.raises(NotReady, match="no healthy view of the cluster.*ghost:1"):
            await kv.health_check()


def _unhealthy(kv: AsyncGridKV) -> bool:
    try:
        kv.node.health_check()
    except NotReady:
        return True
    return False


async def test_a_node_becomes_ready_once_a_seed_answers() -> None:
    net = MemoryNetwork()
    seed_opts = single(disable_auth=True)
    joiner_opts = single(disable_auth=True, seed_addrs=["seed:1"])
    seed = AsyncGridKV(**seed_opts, transport=own_transport("seed:1", net))
    joiner = AsyncGridKV(**joiner_opts, transport=own_transport("joiner:1", net))
    async with joiner:
        assert not joiner.stats().cluster.ready
        async with seed:
            await joiner.wait_ready(timeout=5)
            assert joiner.stats().cluster.ready


# -- the blocking API -------------------------------------------------------------------------


def test_blocking_api_set_get_delete_ttl_and_stats() -> None:
    with GridKV(**single()) as kv:
        kv.wait_ready(timeout=5)
        kv.set("user:1", b"alice", ttl=60)
        assert kv.get("user:1") == b"alice"
        kv.delete("user:1")
        assert kv.get("user:1") is None
        kv.health_check()
        assert kv.stats().cluster.ready
        with pytest.raises(EmptyKey):
            kv.get("")


def test_blocking_close_is_idempotent_and_later_calls_raise() -> None:
    kv = GridKV(**single())
    kv.set("k", b"v")
    kv.close(timeout=5)
    kv.close()
    with pytest.raises(ShuttingDown):
        kv.get("k")
    with pytest.raises(ShuttingDown):
        kv.set("k", b"v")
    with pytest.raises(ShuttingDown):
        kv.delete("k")
    with pytest.raises(ShuttingDown):
        kv.wait_ready()
    with pytest.raises(ShuttingDown):
        kv.health_check()
    assert not kv._runner.thread.is_alive()


def test_blocking_api_from_eight_threads_loses_no_write() -> None:
    with GridKV(**single()) as kv:
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work(t: int) -> None:
            try:
                barrier.wait()
                for i in range(2000):
                    kv.set(f"t{t}:k{i}", f"{t}-{i}".encode())
                    if i % 3 == 0:
                        kv.set("shared", f"{t}-{i}".encode())
                    assert kv.get(f"t{t}:k{i}") == f"{t}-{i}".encode()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        for t in range(8):
            for i in range(2000):
                assert kv.get(f"t{t}:k{i}") == f"{t}-{i}".encode()
        assert kv.stats().storage.keys == 8 * 2000 + 1
        # Each thread's last write of "shared" is at i = 1998; one of those wins.
        assert kv.get("shared") in {f"{t}-1998".encode() for t in range(8)}


def test_blocking_api_takes_a_loaded_config() -> None:
    opts = gridkv.load_config(json.dumps(node_options("cfg")))
    with GridKV(opts) as kv:
        assert kv.node_id == "cfg"
    with GridKV(opts, local_node_id="cfg-2") as kv:
        assert kv.stats().cluster.local_node_id == "cfg-2"
        assert kv.stats().network.type == transport_under_test()


def test_options_must_be_options() -> None:
    with pytest.raises(InvalidArgument, match="expected gridkv.Options"):
        GridKV({"local_node_id": "x"})  # type: ignore[arg-type]
