"""The ``gridkv`` command line.

``node``, ``status``, ``get``/``set``/``del``, ``demo``, ``keys``, ``certs`` and ``version``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gridkv.api.aio import AsyncGridKV
from gridkv.api.blocking import GridKV
from gridkv.base.config import ENV_PREFIX, env_overrides, load_config, merged
from gridkv.base.errors import GridKVError
from gridkv.base.eventloop import run
from gridkv.base.options import Options
from gridkv.base.sections import Section
from gridkv.node import version
from gridkv.security.certs import add_node_certs, create_cluster_certs
from gridkv.security.identity import Identity, new_secret
from gridkv.service.health import HealthServer
from gridkv.service.resp import RespServer

__all__ = ["main", "node_options"]


def node_options(config: str | None, environ: Mapping[str, str]) -> Options:
    """The options of ``gridkv node``: the file's, with ``GRIDKV_*`` variables on top.

    :raises ConfigError: the file or a variable is bad.
    """
    base = load_config(config).to_dict() if config else {}
    return Options.from_mapping(merged(base, env_overrides(environ)))


def _node(args: argparse.Namespace) -> int:
    """Run a node in the foreground until SIGINT or SIGTERM; then close it gracefully."""
    options = node_options(args.config, os.environ)
    if args.health:  # a flag wins over the file and the environment
        options = options.replace(health={"listen": args.health})
    if args.resp:
        options = options.replace(resp={"listen": args.resp})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # The probes stop answering before the node closes (an empty address serves none).
        async with (
            AsyncGridKV(options) as kv,
            RespServer(kv, options.resp.listen),
            HealthServer(kv, options.health.listen),
        ):
            logging.getLogger("gridkv").info(
                "serving until SIGINT or SIGTERM",
                extra={"node_id": kv.node_id, "address": kv.stats().network.local_address},
            )
            await stop.wait()
            logging.getLogger("gridkv").info("closing: draining, handing off, leaving")
        # leaving the block closed the node gracefully (drain, hand off, leave)

    run(serve())
    return 0


def _all_options() -> str:
    """Every configuration key with its default, for ``gridkv node --help``."""
    lines = []

    def walk(section: Section, prefix: str) -> None:
        for f in dataclasses.fields(section):  # type: ignore[arg-type]
            value = getattr(section, f.name)
            if isinstance(value, Section):
                walk(value, f"{prefix}{f.name}.")
            else:
                env = ENV_PREFIX + f"{prefix}{f.name}".upper().replace(".", "__")
                lines.append(f"  {prefix}{f.name} = {value!r}  ({env})")

    walk(Options(local_node_id="<host>-<pid>"), "")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    if args.config:
        return _demo_single(load_config(args.config))
    return _demo_cluster(args.nodes)


def _demo_single(options: Options) -> int:
    out = sys.stdout
    out.write(f"GridKV {version()}: starting node {options.local_node_id!r}\n")
    with GridKV(options) as kv:
        kv.wait_ready(timeout=10)
        _walk_through(kv, kv)
        kv.health_check()
        out.write("\n" + kv.stats().format_table() + "\n")
    return 0


def _demo_cluster(count: int) -> int:
    """Start ``count`` nodes in this process over the memory transport and use them."""
    out = sys.stdout
    out.write(f"GridKV {version()}: starting a {count}-node cluster in this process\n")
    base = {
        "disable_auth": True,  # nodes in one process, over the in-process memory transport
        "network": {"type": "memory"},
        "log": {"level": "warning"},
    }
    nodes: list[GridKV] = []
    try:
        for i in range(count):
            seeds = ["demo-0:7946"] if i else []
            nodes.append(
                GridKV(
                    Options.from_mapping(
                        {
                            **base,
                            "local_node_id": f"demo-{i}",
                            "local_address": f"demo-{i}:7946",
                            "seed_addrs": seeds,
                        }
                    )
                )
            )
        for kv in nodes:
            kv.wait_ready(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            kv.stats().cluster.healthy_nodes < count for kv in nodes
        ):
            time.sleep(0.02)
        _walk_through(nodes[0], nodes[-1])
        node = nodes[0].node
        partition = node.table.partition_of("greeting")
        nodes[0].set("greeting", b"hello again", consistency="all")
        out.write(
            f"replicas of 'greeting' (partition {partition}): "
            f"{', '.join(node.ensure_table().owners(partition))}\n"
        )
        for kv in nodes:
            out.write(f"  {kv.node_id} reads {kv.get('greeting', consistency='quorum')!r}\n")
        nodes[1].delete("greeting", consistency="quorum")
        out.write(
            f"delete on {nodes[1].node_id}; {nodes[-1].node_id} reads "
            f"{nodes[-1].get('greeting', consistency='quorum')!r}\n\n"
        )
        out.write(nodes[0].stats().format_table() + "\n")
    finally:
        for kv in reversed(nodes):
            kv.close()
    return 0


def _walk_through(writer: GridKV, reader: GridKV) -> None:
    out = sys.stdout
    where = "" if writer is reader else f" on {writer.node_id}"
    writer.set("greeting", b"hello, grid")
    seen = _read(reader, "greeting", b"hello, grid")
    out.write(f"set    greeting{where}; {reader.node_id} reads {seen!r}\n")
    writer.set("session:42", b"short-lived", ttl=0.2)
    out.write(
        f"set    session:42 with ttl 0.2s -> {_read(reader, 'session:42', b'short-lived')!r}\n"
    )
    deadline = time.monotonic() + 5
    while reader.get("session:42") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    out.write(f"after  the ttl: session:42 -> {reader.get('session:42')!r}\n")
    writer.delete("greeting")
    out.write(f"delete greeting -> {_read(reader, 'greeting', None)!r}\n")
    for i in range(1000):
        writer.set(f"item:{i}", f"value {i}".encode())
    out.write("set    1000 items\n")


def _read(kv: GridKV, key: str, expect: bytes | None) -> bytes | None:
    # A replica may receive a write a batch window after it was acknowledged (level one);
    # the demo shows what the reader sees once the write has had 2 s to arrive.
    deadline = time.monotonic() + 2
    value = kv.get(key)
    while value != expect and time.monotonic() < deadline:
        time.sleep(0.005)
        value = kv.get(key)
    return value


def _keys_new(pair: bool) -> int:
    if not pair:
        print(new_secret())
        return 0
    identity = Identity.load("")
    print(f"private: {identity.private_key_text}")
    print(f"public:  {identity.public_key_text}")
    return 0


def _door_commands(sub: Any) -> None:
    """``status``, ``get``, ``set`` and ``del``: through a node's RESP door."""
    status = sub.add_parser(
        "status", help="members, states and figures of the cluster, through any node's door"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (2) until Ctrl-C",
    )
    get = sub.add_parser("get", help="print a key's value, through a node's door")
    get.add_argument("key")
    put = sub.add_parser("set", help="store a value, through a node's door")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=float, help="seconds until the key expires")
    delete = sub.add_parser("del", help="delete keys, through a node's door")
    delete.add_argument("keys", nargs="+")
    for command in (status, get, put, delete):
        command.add_argument(
            "--addr",
            default="127.0.0.1:6379",
            help="HOST:PORT of a node's RESP door (resp.listen; 127.0.0.1:6379)",
        )
        command.add_argument("--password", default="", help="the door's password (AUTH)")
        command.add_argument("--user", default="", help="the door user (resp.users)")


def _through_the_door(args: argparse.Namespace) -> int:
    from gridkv.service import status

    login = {"password": args.password, "user": args.user}
    if args.command == "status":
        return status.run_status(args.addr, as_json=args.json, watch=args.watch, **login)
    if args.command == "get":
        return status.run_get(args.addr, args.key, **login)
    if args.command == "set":
        return status.run_set(args.addr, args.key, args.value, args.ttl, **login)
    return status.run_del(args.addr, args.keys, **login)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gridkv`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="gridkv", description="GridKV for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="start a cluster of embedded nodes, use it, and print the stats"
    )
    demo.add_argument("--config", help="run a single node from this JSON, YAML or TOML file")
    demo.add_argument("--nodes", type=int, default=3, help="nodes in the demo cluster (3)")
    keys = sub.add_parser("keys", help="make a cluster secret or a node key pair")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser(
        "new", help="print a fresh cluster secret (auth.cluster_secret), or with --pair a key pair"
    )
    new.add_argument(
        "--pair", action="store_true", help="an Ed25519 key pair (auth.key, auth.trusted_keys)"
    )
    certs = sub.add_parser("certs", help="make a cluster CA and node certificates")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    create = certs_sub.add_parser(
        "create", help="write DIR/ca.crt, DIR/ca.key and DIR/<node>.crt, DIR/<node>.key"
    )
    add = certs_sub.add_parser(
        "add", help="write DIR/<node>.crt, DIR/<node>.key for more nodes, from DIR's CA"
    )
    for command in (create, add):
        command.add_argument("--out", required=True, help="the directory to write into")
        command.add_argument("--nodes", required=True, help="node ids, comma-separated: n1,n2,n3")
    node = sub.add_parser(
        "node",
        help="run a node in the foreground until SIGINT/SIGTERM, then close it gracefully",
        description="Run a GridKV node until SIGINT or SIGTERM, then close it gracefully "
        "(drain, hand off, leave) and exit 0. Options come from --config, then from "
        "GRIDKV_* environment variables (GRIDKV_KEY for a key, GRIDKV_SECTION__KEY for a key "
        "of a section; values read as YAML scalars or flow lists).",
        epilog="configuration keys (default, environment variable):\n" + _all_options(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node.add_argument("--config", help="a JSON, YAML or TOML file of configuration keys")
    node.add_argument(
        "--resp",
        metavar="HOST:PORT",
        help="open the Redis-protocol door on this address (resp.listen)",
    )
    node.add_argument(
        "--health",
        metavar="HOST:PORT",
        help="serve GET /livez and /readyz over HTTP on this address (health.listen)",
    )
    _door_commands(sub)
    sub.add_parser("version", help="print the installed version")
    args = parser.parse_args(argv)
    try:
        if args.command == "node":
            return _node(args)
        if args.command in ("status", "get", "set", "del"):
            return _through_the_door(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "keys":
            return _keys_new(args.pair)
        if args.command == "certs":
            nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
            if args.certs_command == "add":
                add_node_certs(args.out, nodes)
                print(f"wrote {args.out}/ a .crt and .key for {', '.join(nodes)}")
                return 0
            create_cluster_certs(args.out, nodes)
            print(f"wrote {args.out}/ca.crt, ca.key and a .crt and .key for {', '.join(nodes)}")
            return 0
        print(version())
        return 0
    except GridKVError as exc:
        print(f"gridkv: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
