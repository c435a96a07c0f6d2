"""``gridkv status`` and ``gridkv get/set/del``: a cluster seen through any node's door.

``status`` asks the door for ``GRIDKV.STATUS`` (the node's view of every member, with each
member's own figures) and shows a table (rich), refreshed with ``--watch``, or the JSON with
``--json``. ``get``, ``set`` and ``del`` are one command each through the door.

The table carries the dashboard's key figures per member (gridkv-metrics' ``dashboard.json``):
state, keys, memory, replication backlog and lag, health score, and, from members that report
them, operations (per second under ``--watch``, from one refresh to the next; reads answered
from local storage are not counted) and the p50 / p99 latency of the operations through the
member's loop.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from gridkv.node.stats import human_bytes, human_seconds
from gridkv.service.resp.client import RespClient

__all__ = [
    "fetch_status",
    "operation_counts",
    "status_table",
    "run_status",
    "run_get",
    "run_set",
    "run_del",
]

_STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


def fetch_status(client: RespClient) -> dict[str, Any]:
    """The door's ``GRIDKV.STATUS``, decoded."""
    raw = client.call("GRIDKV.STATUS")
    status: dict[str, Any] = json.loads(raw)
    return status


def _size(value: Any) -> str:
    return human_bytes(value, exact=False) if isinstance(value, int) else "-"


def _figure(member: dict[str, Any], key: str) -> str:
    value = member.get(key)
    return "-" if value is None else str(value)


def _rate(member: dict[str, Any], before: dict[str, int], elapsed: float) -> str:
    now, then = member.get("operations"), before.get(str(member.get("node_id")))
    if not isinstance(now, int) or then is None or elapsed <= 0 or now < then:
        return "-"
    return f"{(now - then) / elapsed:,.0f}"


def _latency(member: dict[str, Any]) -> str:
    p50, p99 = member.get("latency_p50"), member.get("latency_p99")
    if not isinstance(p50, int | float) or not isinstance(p99, int | float):
        return "-"
    return f"{human_seconds(p50)} / {human_seconds(p99)}"


def operation_counts(status: dict[str, Any]) -> dict[str, int]:
    """Each member's operations so far (node id -> count), for the next table's rates."""
    return {
        str(m.get("node_id")): m["operations"]
        for m in status.get("members", [])
        if isinstance(m.get("operations"), int)
    }


def status_table(
    status: dict[str, Any], before: dict[str, int] | None = None, elapsed: float = 0.0
) -> Table:
    """The members of ``status`` as a table: one row each, sorted by node id.

    :param before: each member's operations at the previous refresh
        (:func:`operation_counts`), ``elapsed`` seconds ago: the operations column shows
        operations per second; without, operations so far. The operations and latency
        columns are shown when a member reports them.
    """
    title = (
        f"GridKV cluster seen from {status['node_id']} "
        f"({'ready' if status.get('ready') else 'not ready'}; replica_count "
        f"{status.get('replica_count')}, {status.get('partition_count')} partitions)"
    )
    table = Table(title=title)
    for column, justify in (
        ("node", "left"),
        ("address", "left"),
        ("state", "left"),
        ("inc.", "right"),
        ("partitions", "right"),
        ("primary", "right"),
        ("keys", "right"),
        ("memory", "right"),
        ("repl. backlog", "right"),
        ("repl. lag", "right"),
        ("health", "right"),
        ("ready", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    members = status.get("members", [])
    operations = any("operations" in m for m in members)
    latency = any("latency_p50" in m for m in members)
    if operations:
        table.add_column("ops/s" if before is not None else "ops", justify="right", no_wrap=True)
    if latency:
        table.add_column("p50 / p99", justify="right", no_wrap=True)
    for member in sorted(members, key=lambda m: str(m.get("node_id"))):
        state = str(member.get("state", "?"))
        lag = member.get("replication_lag")
        error = member.get("error")
        extra: list[str] = []
        if operations:
            extra.append(
                _rate(member, before, elapsed)
                if before is not None
                else _figure(member, "operations")
            )
        if latency:
            extra.append(_latency(member))
        table.add_row(
            str(member.get("node_id")),
            str(member.get("address")),
            f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]",
            _figure(member, "incarnation"),
            _figure(member, "partitions"),
            _figure(member, "primaries"),
            _figure(member, "keys"),
            f"{_size(member.get('used_bytes'))} / {_size(member.get('max_bytes'))}"
            if "used_bytes" in member
            else "-",
            _size(member.get("backlog_bytes")),
            f"{lag * 1000:.1f} ms" if isinstance(lag, int | float) else "-",
            _figure(member, "health_score"),
            "yes" if member.get("ready") else ("[red]no answer[/]" if error else "no"),
            *extra,
        )
    return table


def run_status(
    address: str,
    password: str = "",
    user: str = "",
    as_json: bool = False,
    watch: float | None = None,
    console: Console | None = None,
) -> int:
    """Show the status once, or every ``watch`` seconds until interrupted; exit status."""
    # Piped output is not wrapped to 80 columns: a row a member, whatever reads it.
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    with RespClient(address, password, user) as client:
        if as_json:
            print(json.dumps(fetch_status(client), indent=2, sort_keys=True))
            return 0
        if watch is None:
            console.print(status_table(fetch_status(client)))
            return 0
        from rich.live import Live

        try:
            status, at = fetch_status(client), time.monotonic()
            with Live(status_table(status), console=console) as live:
                while True:
                    time.sleep(watch)
                    before, then = operation_counts(status), at
                    status, at = fetch_status(client), time.monotonic()
                    live.update(status_table(status, before, at - then))
        except KeyboardInterrupt:
            return 0


def run_get(address: str, key: str, password: str = "", user: str = "") -> int:
    """Print the value of ``key`` (exit 1 when it is missing)."""
    with RespClient(address, password, user) as client:
        value = client.call("GET", key)
    if value is None:
        print("(nil)")
        return 1
    print(value.decode(errors="backslashreplace"))
    return 0


def run_set(
    address: str, key: str, value: str, ttl: float | None, password: str = "", user: str = ""
) -> int:
    """Store ``value`` under ``key`` (expiring after ``ttl`` seconds when given)."""
    extra: list[str] = ["PX", str(max(1, round(ttl * 1000)))] if ttl else []
    with RespClient(address, password, user) as client:
        client.call("SET", key, value, *extra)
    print("OK")
    return 0


def run_del(address: str, keys: Sequence[str], password: str = "", user: str = "") -> int:
    """Delete ``keys``; print how many existed."""
    with RespClient(address, password, user) as client:
        print(client.call("DEL", *keys))
    return 0
