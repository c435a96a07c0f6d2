"""End to end, the configuration the README recommends: ``auth`` on the CA of ``network.ssl``.

Certificates come from ``gridkv certs create`` (its CLI entry point). Three nodes over quic,
one in this process (to look inside it) and two as OS processes, form a cluster in which each
certificate names its node (the transport takes the authenticator's handshake over: no hellos,
frames neither sealed nor MACed again) and replicate data. Nodes with a certificate from
another CA are refused: one of another cluster (that trusts only its own CA), and one that
trusts this cluster's CA but presents a certificate from another, which this cluster's nodes
refuse themselves (counted with the authenticator's refusals).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from gridkv import AsyncGridKV, NotReady, Options
from gridkv.cli import main as gridkv_cli
from gridkv.security.ed25519 import Ed25519Authenticator, TlsGuard
from gridkv.security.identity import new_secret
from gridkv.testing.cluster import NodeProcess
from gridkv.testing.waiting import wait_until
from gridkv_transport_quic.transport import QuicTransport

NODES = ["q0", "q1", "q2"]
KEYS = 300


def files(directory: Path, node: str) -> dict[str, str]:
    """The CA, certificate and key of ``node`` as ``gridkv certs create`` wrote them."""
    return {
        "ca_file": str(directory / "ca.crt"),
        "cert_file": str(directory / f"{node}.crt"),
        "key_file": str(directory / f"{node}.key"),
    }


def bound(directory: Path, node: str, seeds: list[str]) -> dict[str, Any]:
    """Options of ``node``: the same files authenticate it and its TLS (README's set-up)."""
    own = files(directory, node)
    return {
        "local_node_id": node,
        "local_address": "127.0.0.1:0",
        "seed_addrs": seeds,
        "replica_count": 2,
        "auth": own,
        "network": {"type": "quic", "ssl": {"enabled": True, **own}},
        "log": {"level": "warning", "format": "json"},
    }


def transport_of(kv: AsyncGridKV) -> QuicTransport:
    transport = kv.node.transport
    assert isinstance(transport, QuicTransport)
    return transport


async def call(node: NodeProcess, op: str, **args: Any) -> Any:
    """``node.call`` off this loop (the node in this process keeps running meanwhile)."""
    return await asyncio.to_thread(node.call, op, **args)


def members(kv: AsyncGridKV) -> dict[str, str]:
    return {m.node_id: m.state for m in kv.stats().cluster.members}


async def views(process: NodeProcess) -> dict[str, str]:
    return {m["node_id"]: m["state"] for m in await call(process, "members")}


async def converged(
    kv: AsyncGridKV, processes: list[NodeProcess], expect: dict[str, str], timeout: float = 20
) -> None:
    """Wait until every node's view is ``expect``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while members(kv) != expect or any([await views(p) != expect for p in processes]):
        assert loop.time() < deadline, "the views did not converge in time"
        await asyncio.sleep(0.05)


def certs_create(out: Path, nodes: list[str]) -> None:
    assert gridkv_cli(["certs", "create", "--out", str(out), "--nodes", ",".join(nodes)]) == 0


async def test_a_cluster_bound_to_its_certificates_replicates_and_refuses_other_cas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs, other = tmp_path / "certs", tmp_path / "other"
    certs_create(certs, NODES)
    certs_create(other, ["q3", "q4"])
    capsys.readouterr()
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[NodeProcess] = []
    q0 = AsyncGridKV(Options.from_mapping(bound(certs, "q0", [])))
    async with q0:
        seed = q0.stats().network.local_address
        try:
            for node in NODES[1:]:
                processes.append(
                    await asyncio.to_thread(NodeProcess.spawn, bound(certs, node, [seed]), logs)
                )
            everyone = dict.fromkeys(NODES, "alive")
            await q0.wait_ready(timeout=15)
            for process in processes:
                await call(process, "wait_ready", timeout=15)
            await converged(q0, processes, everyone)

            # Data written through any node is replicated and read through every node.
            for i in range(KEYS):
                await q0.set(f"a{i}", f"value-{i}".encode(), consistency="all")
            written = await call(
                processes[0], "set_many", prefix="b", count=KEYS, consistency="all"
            )
            assert written == {"written": KEYS, "failures": {}}
            for i in range(KEYS):
                assert await q0.get(f"b{i}", consistency="quorum") == f"value-{i}".encode()
            for process in processes:
                for prefix in ("a", "b"):
                    held = await call(process, "local_missing", prefix=prefix, count=KEYS)
                    assert held["missing"] == [] and held["owned"] > 0
                    checked = await call(process, "check_many", prefix=prefix, count=KEYS)
                    assert checked == {"missing": [], "wrong": [], "failures": {}}

            # The transport vouched for every peer: no hellos, frames as they are, each link
            # bound to the node its certificate names. (q1 and q2 bind too: a sealed frame
            # would not pass q0's links unsealed, nor q0's plain ones theirs.)
            assert q0.node.messaging.guarded
            auth = q0.node.authenticator
            assert isinstance(auth, Ed25519Authenticator)
            assert auth.handshakes_started == 0
            links = transport_of(q0)._shared.links
            assert {type(link.guard) for link in links} == {TlsGuard}
            assert {link.sender for link in links} == {"q1", "q2"}
            assert not q0.stats().cluster.auth_rejections

            # q3: a node of another cluster (certs create of its own), same configuration.
            foreign = AsyncGridKV(Options.from_mapping(bound(other, "q3", [seed])))
            # q4: trusts this cluster's CA, presents a certificate from the other one; its
            # own trust root is a secret, so only this cluster's check can refuse it.
            intruder = bound(other, "q4", [seed])
            intruder["auth"] = {"cluster_secret": new_secret()}
            intruder["network"]["ssl"]["ca_file"] = str(certs / "ca.crt")
            impostor = AsyncGridKV(Options.from_mapping(intruder))
            async with foreign, impostor:
                await wait_until(lambda: seed in transport_of(foreign)._failures, 15)
                assert "handshake failed" in transport_of(foreign)._failures[seed][2]
                await wait_until(lambda: q0.stats().cluster.auth_rejections, 15)
                await wait_until(lambda: seed in transport_of(impostor)._failures, 15)
                assert "certificate is refused" in transport_of(impostor)._failures[seed][2]
                # Neither got in: each sees itself alone, still joining through its seed,
                # and the cluster sees its three.
                for stranger in (foreign, impostor):
                    assert set(members(stranger)) == {stranger.node_id}
                    with pytest.raises(NotReady, match="still joining"):
                        await stranger.get("a0")
                assert members(q0) == everyone
                for process in processes:
                    assert await views(process) == everyone
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))
