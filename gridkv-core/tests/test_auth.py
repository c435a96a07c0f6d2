"""Peer authentication end to end, on the transport under test: members in, everybody else out.

A test client without an identity, and one with an identity the cluster does not trust, send
what an attacker would (reads, writes, deletes, membership records, a join) as raw frames; each
is refused before it reaches membership or storage, and the refusals are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path
from typing import Any

import msgpack
import pytest
from gridkv import (
    AsyncGridKV,
    AuthenticationError,
    ConfigError,
    NotReady,
    Options,
    PeerUnavailable,
)
from gridkv.node import Node
from gridkv.plugins import get_plugins
from gridkv.security.base import REFUSED
from gridkv.security.certs import create_cluster_certs
from gridkv.security.ed25519 import Ed25519Authenticator
from gridkv.security.identity import Identity, new_secret
from gridkv.storage.base import Entry
from gridkv.testing.transports import network_options, node_options, transport_under_test
from gridkv.testing.waiting import wait_until
from gridkv.transport.base import Transport
from gridkv.wire import codec
from gridkv.wire.fields import MemberRecord
from gridkv.wire.messages import (
    GetReply,
    GetRequest,
    PushPull,
    ReplicateBatch,
    SwimGossip,
)

SECRET = new_secret()
_ids = count()


def options(
    node_id: str, secret: str = SECRET, auth: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    opts = node_options(node_id)
    opts.update(
        auth=auth or {"cluster_secret": secret},
        gossip_interval="20ms",
        failure_timeout="200ms",
        suspect_timeout="300ms",
        membership={"probe_timeout": "50ms"},
        **extra,
    )
    return opts


def address_of(kv: AsyncGridKV) -> str:
    return kv.node.transport.local_address


@contextlib.asynccontextmanager
async def cluster(
    size: int, auth_of: Any = None, prefix: str = "", **extra: Any
) -> AsyncIterator[list[AsyncGridKV]]:
    """``size`` nodes; ``auth_of(node_id)`` gives each its ``auth`` section (a secret else)."""
    prefix = prefix or f"a{next(_ids)}-"
    auth_of = auth_of or (lambda node_id: None)
    nodes: list[AsyncGridKV] = []
    try:
        name = f"{prefix}0"
        first = AsyncGridKV(**options(name, auth=auth_of(name), **extra))
        await first.__aenter__()
        nodes.append(first)
        for i in range(1, size):
            name = f"{prefix}{i}"
            seeds = [address_of(first)]
            kv = AsyncGridKV(**options(name, auth=auth_of(name), seed_addrs=seeds, **extra))
            await kv.__aenter__()
            nodes.append(kv)
        for kv in nodes:
            await kv.wait_ready(timeout=10)
        await wait_until(lambda: all(len(kv.node.membership.live_ids()) == size for kv in nodes))
        yield nodes
    finally:
        for kv in reversed(nodes):
            await kv.close()


@contextlib.asynccontextmanager
async def raw_client() -> AsyncIterator[Transport]:
    """A transport of the kind under test, with no identity at all."""
    kind = transport_under_test()
    address = f"attacker{next(_ids)}:7946" if kind == "memory" else "127.0.0.1:0"
    opts = Options(local_node_id="attacker", local_address=address, disable_auth=True)
    transport = get_plugins().transport(kind)(opts.replace(network=network_options("attacker")))
    await transport.start(lambda peer, frame, sender: None)
    try:
        yield transport
    finally:
        await transport.close()


def attacks(victim: str, other: str, key_partition: tuple[str, int]) -> list[Any]:
    """What an outsider sends: a read, a write, a mass delete, gossip, and a join."""
    key, partition = key_partition
    far_future = (2**47) << 16
    return [
        GetRequest(partition, key),
        ReplicateBatch(other, [(partition, Entry(key, b"evil", far_future, other))]),
        ReplicateBatch(other, [(partition, Entry(key, None, far_future, "zz"))]),
        SwimGossip(other, "127.0.0.1:9", [MemberRecord(victim, "127.0.0.1:9", 2**63, 2, other)]),
        PushPull("fake", "127.0.0.1:9", True, [MemberRecord("fake", "127.0.0.1:9", 1, 0, "fake")]),
    ]


async def test_members_with_the_secret_form_a_cluster_and_replicate() -> None:
    async with cluster(3) as nodes:
        await nodes[0].set("k", b"v", consistency="all")
        assert await nodes[2].get("k", consistency="quorum") == b"v"
        for kv in nodes:
            auth = kv.node.authenticator
            assert isinstance(auth, Ed25519Authenticator)
            assert auth.rejections() == {}
            assert kv.node.router.refused_frames == 0
            stats = kv.stats().cluster
            assert (stats.pubkeys_ready, stats.pubkey_count, stats.auth_rejections) == (True, 2, {})
        # Sessions stand while membership traffic flows both ways: a peer's hello once ended
        # the other's sessions, whose renewal ended the first's... (73 handshakes in 3 s
        # among three idle nodes).
        started = [auth_of(kv).handshakes_started for kv in nodes]
        sent = [kv.stats().network.messages_sent for kv in nodes]
        await wait_until(
            lambda: all(
                kv.stats().network.messages_sent > n + 100
                for kv, n in zip(nodes, sent, strict=True)
            )
        )
        # Over tcp each new connection (a lane, a pooled one as load needs it) runs one.
        slack = 0 if transport_under_test() == "memory" else 2
        for kv, before in zip(nodes, started, strict=True):
            assert before <= auth_of(kv).handshakes_started <= before + slack


def elsewhere(node_id: str) -> dict[str, Any]:
    """An address of its own for a node that reuses an id (on the memory transport)."""
    return {"local_address": f"{node_id}-x:7946"} if transport_under_test() == "memory" else {}


def auth_of(kv: AsyncGridKV) -> Ed25519Authenticator:
    auth = kv.node.authenticator
    assert isinstance(auth, Ed25519Authenticator)
    return auth


async def test_an_outsider_without_an_identity_reads_writes_and_joins_nothing() -> None:
    async with cluster(3) as nodes, raw_client() as attacker:
        await nodes[0].set("k", b"v", consistency="all")
        victim = nodes[1]
        partition = victim.node.ensure_table().partition_of("k")
        sent = attacks(victim.node_id, nodes[0].node_id, ("k", partition))
        junk = (b"\xa3" + b"\x00" * 40, b"\xa1" + b"\x90" + b"\x00" * 64)
        if not victim.node.messaging.guarded:  # memory, or quic under a cluster secret
            for message in sent:
                answer = await attacker.request(address_of(victim), codec.encode(message))
                assert answer[0] == REFUSED
                assert b"unauthenticated frame" in answer
            # A frame that looks sealed but names no session, and one that looks like a hello.
            for frame in junk:
                answer = await attacker.request(address_of(victim), frame)
                assert answer[0] == REFUSED
            assert victim.node.router.refused_frames == len(sent) + 2
            assert victim.stats().cluster.auth_rejections == {
                "unauthenticated frame": len(sent),
                "unknown session": 1,
                "malformed": 1,
            }
        else:
            # Over tcp a connection's first frame must be a hello (the transport runs the
            # handshake): anything else is refused and the connection closed before the frame
            # reaches the node.
            for frame in [codec.encode(message) for message in sent] + list(junk):
                with pytest.raises(PeerUnavailable):
                    await attacker.request(address_of(victim), frame)
            assert victim.node.router.refused_frames == 0
            assert victim.stats().cluster.auth_rejections == {
                "unauthenticated frame": len(sent) + len(junk)
            }
        # Nothing changed: the value, the view.
        for kv in nodes:
            assert await kv.get("k", consistency="all") == b"v"
            assert sorted(kv.node.membership.live_ids()) == sorted(n.node_id for n in nodes)


async def test_a_node_with_another_secret_cannot_join_read_or_write() -> None:
    async with cluster(2, replica_count=2) as nodes:
        await nodes[0].set("k", b"v", consistency="all")
        intruder = AsyncGridKV(
            **options("intruder", secret=new_secret(), seed_addrs=[address_of(nodes[0])])
        )
        async with intruder:
            with pytest.raises(NotReady, match="not vouched for by this cluster's secret"):
                await intruder.wait_ready(timeout=1)
            assert "intruder" not in nodes[0].node.membership.live_ids()
            assert nodes[0].node.authenticator.rejections()["not vouched for"] >= 1
        assert await nodes[1].get("k", consistency="all") == b"v"


async def test_a_member_cannot_speak_for_another_member() -> None:
    async with cluster(3) as nodes:
        await nodes[0].set("k", b"v", consistency="all")
        liar, victim, framed = nodes
        partition = liar.node.ensure_table().partition_of("k")
        forged = ReplicateBatch(framed.node_id, [(partition, Entry("k", b"evil", 1 << 62, "z"))])
        with pytest.raises(PeerUnavailable, match="AuthenticationError.*claims to come from"):
            await liar.node.messaging.request(address_of(victim), forged)
        assert victim.node.router.spoofed_senders == 1
        assert await victim.get("k", consistency="all") == b"v"


@pytest.mark.skipif(
    transport_under_test() == "tcp",
    reason="frames sealed one by one; over tcp records are replayed in test_handshake.py",
)
async def test_a_replayed_frame_is_refused() -> None:
    async with cluster(2, replica_count=2) as nodes:
        a, b = nodes
        port = a.node.messaging
        address = address_of(b)
        message = GetRequest(0, "k")

        async def exchange(hello: bytes) -> bytes:
            return await port.transport.request(address, hello)

        channel = await port.authenticator.channel_to(address, exchange)
        frame = channel.seal(codec.encode(message))
        first = await port.transport.request(address, frame)
        assert isinstance(codec.decode(channel.open(first, frame)), GetReply)
        # The answer is bound to its request: taken as the answer to another, it is refused.
        other = channel.seal(codec.encode(message))
        with pytest.raises(AuthenticationError, match="answer to another request"):
            channel.open(first, other)
        again = await port.transport.request(address, frame)
        assert again[0] == REFUSED and b"replayed or too old" in again
        assert b.node.authenticator.rejections() == {"replayed or too old": 1}


async def test_a_node_with_seeds_and_no_trust_root_is_told_how_to_make_one() -> None:
    opts = node_options("lonely")
    opts["seed_addrs"] = ["127.0.0.1:9"]
    with pytest.raises(ConfigError, match="gridkv keys new"):
        AsyncGridKV(**opts)


async def test_a_key_rotates_while_writes_go_on() -> None:
    async with cluster(3) as nodes:
        rotating = nodes[1]
        auth = rotating.node.authenticator
        assert isinstance(auth, Ed25519Authenticator)
        old_key = auth.identity.public_key
        failures: list[BaseException] = []
        written = 0
        stop = asyncio.Event()

        async def write() -> None:
            nonlocal written
            while not stop.is_set():
                try:
                    await nodes[written % 3].set(f"w{written}", b"v", consistency="quorum")
                    written += 1
                except Exception as exc:  # counted: none is expected
                    failures.append(exc)
                await asyncio.sleep(0)

        writer = asyncio.create_task(write())
        await wait_until(lambda: written >= 50)
        rotating.node.rotate_key(key=Identity.load("x").private_key_text)
        new_key = auth.identity.public_key
        assert new_key != old_key
        at_rotation = written

        def peers_saw_new_key() -> bool:
            others = [auth_of(kv) for kv in nodes if kv is not rotating]
            if not rotating.node.messaging.guarded:  # a session per peer, set up again
                return all(any(s.peer_key == new_key for s in o._in.values()) for o in others)
            # Over tcp its connections are replaced as their requests finish.
            return all(o._connected.get(rotating.node_id) == new_key for o in others)

        def proof_key(kv: AsyncGridKV) -> bytes:
            member = kv.node.membership.swim.members[rotating.node_id]  # type: ignore[attr-defined]
            key: bytes = msgpack.unpackb(member.proof)[0]
            return key

        await wait_until(peers_saw_new_key)
        # Its member record went round again, proven with the new key.
        await wait_until(
            lambda: all(proof_key(kv) == new_key for kv in nodes if kv is not rotating)
        )
        await wait_until(lambda: written >= at_rotation + 200)
        stop.set()
        await writer
        assert failures == []
        for kv in nodes:
            assert kv.stats().cluster.auth_rejections == {}
        assert await nodes[0].get(f"w{written - 1}", consistency="quorum") == b"v"


async def test_a_restarted_member_gets_new_sessions_from_its_peers() -> None:
    async with cluster(3) as nodes:
        gone = nodes[2]
        node_id, address = gone.node_id, address_of(gone)
        await gone.close()
        same_address: dict[str, Any] = (
            {"local_address": address} if transport_under_test() == "memory" else {}
        )
        again = AsyncGridKV(**options(node_id, seed_addrs=[address_of(nodes[0])], **same_address))
        async with again:
            await again.wait_ready(timeout=10)
            everyone = sorted([nodes[0].node_id, nodes[1].node_id, node_id])
            views = [nodes[0], nodes[1], again]
            await wait_until(
                lambda: all(sorted(kv.node.membership.live_ids()) == everyone for kv in views)
            )
            await again.set("after", b"restart", consistency="all")
            for kv in (nodes[0], nodes[1]):
                assert await kv.get("after", consistency="one") == b"restart"
                assert kv.stats().cluster.pubkeys_ready
            nodes[2] = again  # closed by the cluster's exit (a second close is a no-op)


async def test_a_session_set_up_across_a_rotation_is_not_kept() -> None:
    def authenticator(node_id: str) -> Ed25519Authenticator:
        opts = Options.from_mapping({"local_node_id": node_id, "auth": {"cluster_secret": SECRET}})
        return Ed25519Authenticator(opts, clock=time.time)

    a, b = authenticator("a"), authenticator("b")
    release = asyncio.Event()

    async def exchange(hello: bytes) -> bytes:
        await release.wait()
        channel, reply = b.accept("a:1", hello)
        assert channel is None
        return reply

    pending = asyncio.create_task(a.channel_to("b:1", exchange, "b"))
    await asyncio.sleep(0)  # the hello is out, signed with the old key
    a.rotate(key=Identity.load("a").private_key_text)
    release.set()
    session = await pending
    assert session.peer_id == "b"  # used for the message that waited on it
    assert a.channel_ready("b:1") is None  # but not kept: the next one uses the new key


async def test_a_key_not_in_the_trusted_keys_cannot_join(tmp_path: Path) -> None:
    keys = {f"k-{i}": Identity.load(f"k-{i}") for i in range(3)}
    listed = tmp_path / "trusted"
    listed.write_text("".join(f"{n} {i.public_key_text}\n" for n, i in keys.items()))

    def auth_of(node_id: str) -> dict[str, Any]:
        return {"key": keys[node_id].private_key_text, "trusted_keys": str(listed)}

    async with cluster(3, auth_of=auth_of, prefix="k-") as nodes:
        await nodes[0].set("k", b"v", consistency="all")
        # A node with a key of its own, not listed; and one that claims a listed id.
        for node_id in ("k-9", "k-1"):
            intruder = AsyncGridKV(
                **options(
                    node_id,
                    auth={
                        "key": Identity.load(node_id).private_key_text,
                        "trusted_keys": str(listed),
                    },
                    seed_addrs=[address_of(nodes[0])],
                    **elsewhere(node_id),
                )
            )
            async with intruder:
                with pytest.raises(NotReady, match="trusted keys"):
                    await intruder.wait_ready(timeout=1)
        for kv in nodes:
            assert sorted(kv.node.membership.live_ids()) == ["k-0", "k-1", "k-2"]
            assert await kv.get("k", consistency="all") == b"v"
        rejections = nodes[0].stats().cluster.auth_rejections
        assert rejections["not in the trusted keys"] >= 1
        assert rejections["key other than"] >= 1


async def test_a_certificate_from_another_ca_cannot_join(tmp_path: Path) -> None:
    create_cluster_certs(str(tmp_path / "ours"), ["c-0", "c-1", "c-2"])
    create_cluster_certs(str(tmp_path / "theirs"), ["c-9"])

    def auth_of(node_id: str, where: str = "ours") -> dict[str, Any]:
        d = tmp_path / where
        return {
            "key_file": str(d / f"{node_id}.key"),
            "cert_file": str(d / f"{node_id}.crt"),
            "ca_file": str(tmp_path / "ours" / "ca.crt"),
        }

    async with cluster(3, auth_of=auth_of, prefix="c-") as nodes:
        intruder = AsyncGridKV(
            **options(
                "c-9",
                auth={**auth_of("c-9", "theirs"), "ca_file": str(tmp_path / "theirs" / "ca.crt")},
                seed_addrs=[address_of(nodes[0])],
            )
        )
        async with intruder:
            with pytest.raises(NotReady, match="not issued by the cluster CA"):
                await intruder.wait_ready(timeout=1)
        assert sorted(nodes[0].node.membership.live_ids()) == ["c-0", "c-1", "c-2"]
        assert nodes[0].stats().cluster.auth_rejections["certificate"] >= 1


async def test_a_member_cannot_move_another_members_address_or_declare_it_gone() -> None:
    async with cluster(3) as nodes:
        liar, victim, target = nodes
        swim = victim.node.membership.swim  # type: ignore[attr-defined]
        before = swim.members[target.node_id]
        address, incarnation = before.address, before.incarnation
        refused = swim.refused_records
        proof_of_liar = liar.node.membership.swim.own_record().proof  # type: ignore[attr-defined]
        lies = [
            # Moved to the liar's own address, at a newer incarnation: no proof, then the
            # liar's own proof (its key, not the target's), then the target's old proof.
            MemberRecord(target.node_id, "127.0.0.1:9", incarnation + 5, 0, liar.node_id),
            MemberRecord(
                target.node_id, "127.0.0.1:9", incarnation + 5, 0, liar.node_id, proof_of_liar
            ),
            MemberRecord(
                target.node_id, "127.0.0.1:9", incarnation + 5, 0, liar.node_id, before.proof
            ),
            # Left, said by somebody else; dead at an incarnation it never claimed.
            MemberRecord(target.node_id, address, incarnation + 1, 3, liar.node_id),
            MemberRecord(target.node_id, address, 2**62, 2, liar.node_id),
        ]
        for lie in lies:
            gossip = SwimGossip(liar.node_id, address_of(liar), [lie])
            await liar.node.messaging.send(address_of(victim), gossip)
        await wait_until(lambda: swim.refused_records >= refused + len(lies))
        after = swim.members[target.node_id]
        assert (after.address, after.state) == (address, "alive")
        assert after.incarnation == incarnation
        # The target's own record, signed, is what everybody holds.
        assert after.proof and victim.node.authenticator.record_proofs().check(  # type: ignore[union-attr]
            after.record(victim.node_id)
        )


def test_auth_authenticator_names_the_plugin_and_an_unknown_one_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"nope.*ed25519|ed25519.*nope"):
        Node(Options.from_mapping({"local_node_id": "n", "auth": {"authenticator": "nope"}}))
    with pytest.raises(ConfigError, match="authenticator"):
        Options.from_mapping({"auth": {"authenticator": ""}})
    # Another authenticator brings its own trust root: core does not ask for one of ed25519's.
    custom = {"local_node_id": "n", "seed_addrs": ["x:1"], "auth": {"authenticator": "custom"}}
    Node._check_security(Options.from_mapping(custom))
