"""Seeds named through DNS: ``dns:HOST:PORT`` entries of ``seed_addrs`` stand for every A and
AAAA record of HOST, looked up again before every join attempt and while the node runs."""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gridkv import AsyncGridKV, ConfigError, NotReady, Options
from gridkv.base.config import env_overrides
from gridkv.cluster.membership import seeds
from gridkv.testing.transports import node_options, transport_under_test
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

Resolver = Callable[[str, int, float], Awaitable[list[str]]]


def memory_node(
    net: MemoryNetwork, node_id: str, address: str, seed_addrs: list[str], **extra: Any
) -> AsyncGridKV:
    """A node on ``net`` at ``address`` (memory addresses are any text, IP:port included)."""
    return AsyncGridKV(
        local_node_id=node_id,
        local_address=address,
        seed_addrs=seed_addrs,
        disable_auth=True,
        network={"type": "memory"},
        transport=MemoryTransport(address, net, timeout=0.2),
        **extra,
    )


def fake_resolver(records: dict[str, list[str]], calls: list[str]) -> Resolver:
    """A resolver that answers from ``records`` (name -> IPs) as it is when asked."""

    async def resolve(host: str, port: int, timeout: float) -> list[str]:
        calls.append(host)
        if host not in records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return sorted(seeds.canonical(f"{ip}:{port}") for ip in records[host])

    return resolve


def members(kv: AsyncGridKV) -> set[str]:
    return {m.node_id for m in kv.node.membership.members() if m.state == "alive"}


# -- resolution ----------------------------------------------------------------------------


async def test_localhost_resolves_to_loopback_seeds_at_the_port() -> None:
    found = await seeds.resolve("localhost", 7946, 5.0)
    assert "127.0.0.1:7946" in found
    for address in found:
        host, _, port = address.rpartition(":")
        assert port == "7946"
        assert ipaddress.ip_address(host.strip("[]")).is_loopback
    assert found == sorted(set(found))


def test_addresses_are_compared_in_one_spelling() -> None:
    assert seeds.canonical("::1:7946") == "[::1]:7946"
    assert seeds.canonical("[0:0::1]:7946") == "[::1]:7946"
    assert seeds.canonical("127.0.0.1:7946") == "127.0.0.1:7946"
    assert seeds.canonical("node-1:7946") == "node-1:7946"


async def test_a_lookup_keeps_the_order_leaves_this_node_out_and_reports_bad_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    records = {"peers": ["127.0.0.3", "127.0.0.2", "::1"], "me": ["127.0.0.2"]}
    monkeypatch.setattr(seeds, "resolve", fake_resolver(records, calls))
    entries = ["127.0.0.9:1", "dns:peers:7946", "dns:ghost.invalid:7946", "dns:me:7946"]
    found = await seeds.lookup(entries, "127.0.0.2:7946", 1.0, random.Random(0))
    assert found.addresses == ["127.0.0.9:1", "127.0.0.3:7946", "[::1]:7946"]
    assert found.found == {
        "dns:peers:7946": ["127.0.0.2:7946", "127.0.0.3:7946", "[::1]:7946"],
        "dns:me:7946": ["127.0.0.2:7946"],
    }
    assert list(found.problems) == ["dns:ghost.invalid:7946"]
    assert not found.alone
    alone = await seeds.lookup(["dns:me:7946"], "127.0.0.2:7946", 1.0, random.Random(0))
    assert alone.alone and alone.addresses == []


async def test_a_name_with_many_records_gives_a_bounded_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = {"big": [f"127.0.1.{i}" for i in range(1, 101)]}
    monkeypatch.setattr(seeds, "resolve", fake_resolver(records, []))
    found = await seeds.lookup(["dns:big:7946"], "127.0.1.1:7946", 1.0, random.Random(0))
    assert len(found.addresses) == seeds.MAX_SEEDS_PER_NAME
    assert "127.0.1.1:7946" not in found.addresses
    assert len(found.found["dns:big:7946"]) == 100


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError(), "no answer from the resolver in time"),
        (UnicodeError("label too long"), "UnicodeError: label too long"),
        (RuntimeError("executor shut down"), "RuntimeError: executor shut down"),
    ],
)
async def test_a_resolver_that_fails_is_a_reported_problem_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, error: Exception, reason: str
) -> None:
    async def failing(host: str, port: int, timeout: float) -> list[str]:
        raise error

    monkeypatch.setattr(seeds, "resolve", failing)
    found = await seeds.lookup(["dns:bad:1", "127.0.0.9:1"], "127.0.0.1:1", 0.01, random.Random(0))
    assert found.problems == {"dns:bad:1": reason}
    assert found.addresses == ["127.0.0.9:1"]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("dns:", "port from 1 to 65535"),
        ("dns:host", "port from 1 to 65535"),
        ("dns:host:0", "port from 1 to 65535"),
        ("dns:host:65536", "port from 1 to 65535"),
        ("dns:host:http", "port from 1 to 65535"),
        ("dns::7946", "a DNS name for HOST"),
        ("dns:[::1]:7946", "a DNS name for HOST"),
        ("dns:a b:7946", "a DNS name for HOST"),
        ("dns:a\x00b:7946", "a DNS name for HOST"),
        ("dns:" + "a" * 254 + ":7946", "a DNS name for HOST"),
    ],
)
def test_a_malformed_dns_seed_is_a_config_error_naming_it(entry: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"'seed_addrs\[1\]'.*{why}"):
        Options(seed_addrs=["10.0.0.1:7946", entry], disable_auth=True)


def test_dns_seeds_are_accepted_from_a_file_and_from_the_environment() -> None:
    name = "dns:gridkv-headless.default.svc.cluster.local:7946"
    assert Options(seed_addrs=[name], disable_auth=True).seed_addrs == [name]
    env = env_overrides({"GRIDKV_SEED_ADDRS": f"{name},10.0.0.1:7946"})
    options = Options.from_mapping({**env, "disable_auth": True})
    assert options.seed_addrs == [name, "10.0.0.1:7946"]
    # A name that resolves to nothing is no configuration error: it may appear later.
    Options(seed_addrs=["dns:ghost.invalid:7946"], disable_auth=True)


# -- joining ---------------------------------------------------------------------------------


async def test_a_node_joins_through_localhost_resolved() -> None:
    net = MemoryNetwork()
    seed = memory_node(net, "seed", "127.0.0.1:7101", [])
    joiner = memory_node(net, "joiner", "127.0.0.1:7102", ["dns:localhost:7101"])
    async with seed, joiner:
        await joiner.wait_ready(timeout=10)
        await wait_until(lambda: members(seed) == {"seed", "joiner"})
        assert members(joiner) == {"seed", "joiner"}


async def test_an_unresolvable_name_is_logged_and_retried_while_other_seeds_join(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    real = seeds.resolve

    async def counting(host: str, port: int, timeout: float) -> list[str]:
        calls.append(host)
        return await real(host, port, timeout)

    monkeypatch.setattr(seeds, "resolve", counting)
    caplog.set_level(logging.INFO, logger="gridkv")
    net = MemoryNetwork()
    entries = ["dns:ghost.invalid:7946", "dns:localhost:7201"]
    seed = memory_node(net, "seed", "127.0.0.1:7201", [])
    fast = {"membership": {"push_pull_interval": 0.05}}
    joiner = memory_node(net, "joiner", "127.0.0.1:7202", entries, **fast)
    async with seed, joiner:
        await joiner.wait_ready(timeout=10)
        # Looked up before the join and again since, while the node runs.
        await wait_until(lambda: calls.count("ghost.invalid") >= 3)
    warnings = [r for r in caplog.records if "resolves to no address" in r.getMessage()]
    assert len(warnings) == 1  # once, not at every attempt
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].__dict__["seed"] == "dns:ghost.invalid:7946"


async def test_a_node_whose_only_name_does_not_resolve_is_not_ready_and_says_why() -> None:
    net = MemoryNetwork()
    async with memory_node(
        net, "lost", "127.0.0.1:7301", ["dns:ghost.invalid:7946"], startup_grace_period=0.05
    ) as kv:
        with pytest.raises(NotReady, match=r"dns:ghost\.invalid:7946: resolves to no address"):
            await kv.wait_ready(timeout=0.3)
        with pytest.raises(NotReady, match=r"no seed answered.*dns:ghost\.invalid:7946"):
            await kv.health_check()


async def test_names_are_looked_up_again_at_every_join_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    records: dict[str, list[str]] = {"pods": []}  # the Service exists, no pod is in it yet
    monkeypatch.setattr(seeds, "resolve", fake_resolver(records, calls))
    net = MemoryNetwork()
    seed = memory_node(net, "seed", "127.0.0.2:7946", [])
    joiner = memory_node(net, "joiner", "127.0.0.3:7946", ["dns:pods:7946"])
    async with seed, joiner:
        await wait_until(lambda: len(calls) >= 2)
        assert not joiner.node.membership.joined
        records["pods"] = ["127.0.0.2", "127.0.0.3"]  # the pods appear
        await joiner.wait_ready(timeout=10)
        await wait_until(lambda: members(seed) == {"seed", "joiner"})


async def test_a_node_whose_names_lead_to_itself_alone_starts_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seeds, "resolve", fake_resolver({"pods": ["127.0.0.2"]}, []))
    net = MemoryNetwork()
    async with memory_node(
        net, "first", "127.0.0.2:7946", ["dns:pods:7946"], startup_grace_period=0.01
    ) as kv:
        await kv.wait_ready(timeout=10)
        await kv.set("k", b"v")
        await kv.health_check()  # past the grace period: alone, as a node without seeds


async def test_two_nodes_that_each_started_alone_meet_once_the_name_leads_to_both(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gridkv")
    records = {"pods": ["127.0.0.2"]}
    monkeypatch.setattr(seeds, "resolve", fake_resolver(records, []))
    net = MemoryNetwork()
    fast = {"membership": {"push_pull_interval": 0.05}}
    async with memory_node(net, "a", "127.0.0.2:7946", ["dns:pods:7946"], **fast) as a:
        await a.wait_ready(timeout=10)
        records["pods"] = ["127.0.0.3"]  # b's lookup finds b alone
        async with memory_node(net, "b", "127.0.0.3:7946", ["dns:pods:7946"], **fast) as b:
            await b.wait_ready(timeout=10)
            records["pods"] = ["127.0.0.2", "127.0.0.3"]
            await wait_until(lambda: members(a) == members(b) == {"a", "b"})
    alone = [r.__dict__["node_id"] for r in caplog.records if "alone" in r.getMessage()]
    assert alone == ["a", "b"]  # each started a cluster of its own first


@pytest.mark.skipif(transport_under_test() == "memory", reason="a join over real sockets")
async def test_two_nodes_join_over_the_network_through_a_dns_seed() -> None:
    both: dict[str, Any] = {"disable_auth": True, "replica_count": 2}
    first = AsyncGridKV(**node_options("dns-a"), **both)
    async with first:
        port = first.stats().network.local_address.rpartition(":")[2]
        second = AsyncGridKV(**node_options("dns-b"), seed_addrs=[f"dns:localhost:{port}"], **both)
        async with second:
            await second.wait_ready(timeout=20)
            await wait_until(lambda: members(first) == members(second) == {"dns-a", "dns-b"})
            await second.set("k", b"v", consistency="all")
            assert await first.get("k", consistency="all") == b"v"
