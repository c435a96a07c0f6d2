"""Nodes whose identities come from secrets directories, against the outcomes gridkv-core's
authentication tests check for the built-in authenticator (``gridkv-core/tests/test_auth.py``):
members form a cluster and exchange data; a node whose key is not trusted is refused; forged,
replayed and unauthenticated frames are refused and counted; and, this plugin's own, a member
added to the mounted secret is let in without a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from gridkv import AsyncGridKV, AuthenticationError, NotReady, PeerUnavailable
from gridkv.plugins import Plugins
from gridkv.security.base import REFUSED
from gridkv.security.identity import Identity, new_secret
from gridkv.storage import Entry
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport
from gridkv.wire import codec
from gridkv.wire.messages import GetReply, GetRequest, ReplicateBatch
from gridkv_auth_secretsdir import DIR_ENV, NAME, DirectoryKeysTrust, SecretsDirAuthenticator
from gridkv_auth_secretsdir.testing import write_secret


class Cluster:
    """Nodes on an in-process network of the test's own, each given a secrets directory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.net = MemoryNetwork()
        self.plugins = Plugins()
        self.nodes: list[AsyncGridKV] = []

    def node(self, node_id: str, secrets: Path, seed: str = "", address: str = "") -> AsyncGridKV:
        """A node, not started, whose identity and trust root are in ``secrets``."""
        address = address or f"{node_id}:1"
        self.monkeypatch.setenv(DIR_ENV, str(secrets))  # read when the node is built
        kv = AsyncGridKV(
            local_node_id=node_id,
            local_address=address,
            seed_addrs=[seed] if seed else [],
            transport=MemoryTransport(address, self.net, timeout=0.5),
            plugins=self.plugins,
            auth={"authenticator": NAME},
            gossip_interval="20ms",
            failure_timeout="200ms",
            suspect_timeout="300ms",
            membership={"probe_timeout": "50ms"},
            log={"level": "critical"},
        )
        self.nodes.append(kv)
        return kv

    async def start(self, secrets: Path, names: list[str]) -> list[AsyncGridKV]:
        """Nodes ``names``, joined through the first, ready and seeing one another."""
        seed = f"{names[0]}:1"
        nodes = [self.node(n, secrets, seed if i else "") for i, n in enumerate(names)]
        for kv in nodes:
            await kv.start()
        for kv in nodes:
            await kv.wait_ready(timeout=10)
        await wait_until(
            lambda: all(len(kv.node.membership.live_ids()) == len(names) for kv in nodes)
        )
        return nodes


@pytest.fixture
async def cluster(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    made = Cluster(monkeypatch)
    try:
        yield made
    finally:
        for kv in reversed(made.nodes):
            await kv.close()


KEYS = {name: Identity.load(name) for name in ("n0", "n1", "n2", "n9")}


def key_items(*names: str, keys: Mapping[str, Identity] = KEYS) -> dict[str, str]:
    """``<id>.key`` and ``<id>.pub`` of each named node."""
    items: dict[str, str] = {}
    for name in names:
        items[f"{name}.key"] = keys[name].private_key_text + "\n"
        items[f"{name}.pub"] = keys[name].public_key_text + "\n"
    return items


def authenticator(kv: AsyncGridKV) -> SecretsDirAuthenticator:
    auth = kv.node.authenticator
    assert isinstance(auth, SecretsDirAuthenticator)
    return auth


def address_of(kv: AsyncGridKV) -> str:
    return kv.node.transport.local_address


async def exchange_data(nodes: list[AsyncGridKV]) -> None:
    await nodes[0].set("k", b"v", consistency="all")
    assert await nodes[-1].get("k", consistency="quorum") == b"v"
    for kv in nodes:
        assert kv.stats().cluster.auth_rejections == {}
        assert kv.stats().cluster.pubkeys_ready
        assert kv.node.router.refused_frames == 0


async def test_members_sharing_a_cluster_secret_form_a_cluster_and_exchange_data(
    cluster: Cluster, tmp_path: Path
) -> None:
    items = {"cluster-secret": new_secret() + "\n"} | {
        k: v for k, v in key_items("n0", "n1", "n2").items() if k.endswith(".key")
    }
    nodes = await cluster.start(write_secret(tmp_path / "s", items), ["n0", "n1", "n2"])
    await exchange_data(nodes)
    for kv in nodes:  # each speaks with the key of its own <id>.key, and knows the others'
        auth = authenticator(kv)
        assert auth.identity.public_key == KEYS[kv.node_id].public_key
        others = {n: KEYS[n].public_key for n in ("n0", "n1", "n2") if n != kv.node_id}
        assert auth.peer_keys() == others


async def test_members_listed_by_public_key_form_a_cluster_and_exchange_data(
    cluster: Cluster, tmp_path: Path
) -> None:
    secrets = write_secret(tmp_path / "s", key_items("n0", "n1", "n2"))
    nodes = await cluster.start(secrets, ["n0", "n1", "n2"])
    await exchange_data(nodes)
    assert isinstance(authenticator(nodes[0]).sessions.trust, DirectoryKeysTrust)  # type: ignore[union-attr]


async def test_a_node_whose_key_is_not_listed_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    secrets = write_secret(tmp_path / "s", key_items("n0", "n1", "n2"))
    nodes = await cluster.start(secrets, ["n0", "n1", "n2"])
    await nodes[0].set("k", b"v", consistency="all")
    # An outsider that trusts the members (and lists itself); then one claiming n1's id with
    # a key of its own, its directory listing that key as n1's.
    outsider = {**key_items("n0", "n1", "n2", "n9")}
    impostor_keys = {**KEYS, "n1": Identity.load("n1")}
    impostor = {**key_items("n0", "n2"), **key_items("n1", keys=impostor_keys)}
    for node_id, items, refusal in [
        ("n9", outsider, "not in the trusted keys"),
        ("n1", impostor, "key other than"),
    ]:
        own = write_secret(tmp_path / f"{node_id}-own", items)
        intruder = cluster.node(node_id, own, "n0:1", address=f"{node_id}-x:1")
        async with intruder:
            with pytest.raises(NotReady, match="trusted keys"):
                await intruder.wait_ready(timeout=1)
        assert nodes[0].stats().cluster.auth_rejections[refusal] >= 1
    for kv in nodes:
        assert sorted(kv.node.membership.live_ids()) == ["n0", "n1", "n2"]
        assert await kv.get("k", consistency="all") == b"v"


async def test_a_node_with_another_cluster_secret_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    ours = write_secret(tmp_path / "ours", {"cluster-secret": new_secret()})
    theirs = write_secret(tmp_path / "theirs", {"cluster-secret": new_secret()})
    nodes = await cluster.start(ours, ["n0", "n1"])
    intruder = cluster.node("n9", theirs, "n0:1")
    async with intruder:
        with pytest.raises(NotReady, match="not vouched for by this cluster's secret"):
            await intruder.wait_ready(timeout=1)
    assert "n9" not in nodes[0].node.membership.live_ids()
    assert nodes[0].stats().cluster.auth_rejections["not vouched for"] >= 1


async def test_a_member_added_to_the_mounted_secret_is_let_in_without_a_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    shared = write_secret(tmp_path / "shared", key_items("n0", "n1"))
    nodes = await cluster.start(shared, ["n0", "n1"])
    own = write_secret(tmp_path / "n2", key_items("n0", "n1", "n2"))
    newcomer = cluster.node("n2", own, "n0:1")
    await newcomer.start()
    with pytest.raises(NotReady, match="trusted keys"):
        await newcomer.wait_ready(timeout=0.5)
    write_secret(shared, key_items("n0", "n1", "n2"))  # the secret is updated in place
    await newcomer.wait_ready(timeout=10)
    nodes.append(newcomer)
    await wait_until(lambda: all(len(kv.node.membership.live_ids()) == 3 for kv in nodes))
    await newcomer.set("late", b"joiner", consistency="all")
    assert await nodes[0].get("late", consistency="one") == b"joiner"
    trust = authenticator(nodes[0]).sessions.trust  # type: ignore[union-attr]
    assert isinstance(trust, DirectoryKeysTrust)
    assert trust.loads == 2


async def test_a_member_cannot_speak_for_another_member(cluster: Cluster, tmp_path: Path) -> None:
    secrets = write_secret(tmp_path / "s", key_items("n0", "n1", "n2"))
    liar, victim, framed = await cluster.start(secrets, ["n0", "n1", "n2"])
    await liar.set("k", b"v", consistency="all")
    partition = liar.node.ensure_table().partition_of("k")
    forged = ReplicateBatch(framed.node_id, [(partition, Entry("k", b"evil", 1 << 62, "z"))])
    with pytest.raises(PeerUnavailable, match="AuthenticationError.*claims to come from"):
        await liar.node.messaging.request(address_of(victim), forged)
    assert victim.node.router.spoofed_senders == 1
    assert await victim.get("k", consistency="all") == b"v"


async def test_a_replayed_frame_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    secrets = write_secret(tmp_path / "s", key_items("n0", "n1"))
    a, b = await cluster.start(secrets, ["n0", "n1"])
    port = a.node.messaging
    address = address_of(b)

    async def exchange(hello: bytes) -> bytes:
        return await port.transport.request(address, hello)

    channel = await port.authenticator.channel_to(address, exchange)
    frame = channel.seal(codec.encode(GetRequest(0, "k")))
    first = await port.transport.request(address, frame)
    assert isinstance(codec.decode(channel.open(first, frame)), GetReply)
    other = channel.seal(codec.encode(GetRequest(0, "k")))
    with pytest.raises(AuthenticationError, match="answer to another request"):
        channel.open(first, other)
    again = await port.transport.request(address, frame)
    assert again[0] == REFUSED
    assert b"replayed or too old" in again
    assert b.node.authenticator.rejections() == {"replayed or too old": 1}


async def test_an_outsider_without_an_identity_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    secrets = write_secret(tmp_path / "s", key_items("n0", "n1"))
    nodes = await cluster.start(secrets, ["n0", "n1"])
    await nodes[0].set("k", b"v", consistency="quorum")
    attacker = MemoryTransport("attacker:1", cluster.net, timeout=0.5)

    def ignore(peer: str, frame: bytes, sender: str | None) -> Any:
        return None

    await attacker.start(ignore)
    try:
        forged = ReplicateBatch("n0", [(0, Entry("k", None, 1 << 62, "zz"))])
        for message in (GetRequest(0, "k"), forged):
            answer = await attacker.request(address_of(nodes[1]), codec.encode(message))
            assert answer[0] == REFUSED
            assert b"unauthenticated frame" in answer
    finally:
        await attacker.close()
    assert nodes[1].stats().cluster.auth_rejections == {"unauthenticated frame": 2}
    assert await nodes[1].get("k", consistency="quorum") == b"v"
