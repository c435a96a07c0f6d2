"""The ``gridkv`` command line: ``gridkv demo`` and ``gridkv version``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gridkv.client import GridKV
from gridkv.config import load_config
from gridkv.errors import GridKVError
from gridkv.node import version
from gridkv.options import Options

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    if args.config:
        options = load_config(args.config)
    else:
        options = Options.from_mapping(
            {
                "local_node_id": "demo-1",
                "local_address": "demo-1:7946",
                "network": {"type": "memory"},
                "log": {"level": "warning"},
            }
        )
    out = sys.stdout
    out.write(f"GridKV {version()}: starting node {options.local_node_id!r}\n")
    with GridKV(options) as kv:
        kv.wait_ready(timeout=10)
        kv.set("greeting", b"hello, grid")
        out.write(f"set    greeting = {kv.get('greeting')!r}\n")
        kv.set("session:42", b"short-lived", ttl=0.2)
        out.write(f"set    session:42 with ttl 0.2s -> {kv.get('session:42')!r}\n")
        deadline = time.monotonic() + 5
        while kv.get("session:42") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        out.write(f"after  the ttl: session:42 -> {kv.get('session:42')!r}\n")
        kv.delete("greeting")
        out.write(f"delete greeting -> {kv.get('greeting')!r}\n")
        for i in range(1000):
            kv.set(f"item:{i}", f"value {i}".encode())
        out.write("set    1000 items\n\n")
        kv.health_check()
        out.write(kv.stats().format_table() + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gridkv`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="gridkv", description="GridKV for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start an embedded node, use it, and print its stats")
    demo.add_argument("--config", help="a JSON, YAML or TOML configuration file")
    sub.add_parser("version", help="print the installed version")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        print(version())
        return 0
    except GridKVError as exc:
        print(f"gridkv: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
