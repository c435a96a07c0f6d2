"""The RESP door under redis-benchmark, against redis-server and a minimal asyncio server.

* One node: ``redis-benchmark -c 50 -d 100 -r KEYSPACE -t set|get -P 1|16`` against a one-node
  GridKV door (``python -m gridkv.cli node``, TCP network, authentication off as it has no
  peers), a ``redis-server`` without persistence, and a minimal asyncio RESP server (GET and
  SET on a dict, ``hiredis.Reader``, one write per batch, on the loop GridKV runs on: uvloop
  when installed), all three running at once and taking turns run by run, ``--rounds`` times
  (the best run of each counts). Requests/s, the ratios to Redis, and the CPU each server
  process (``/proc``) and redis-benchmark (``getrusage``) used during the run, user + system,
  in percent of one core. Issue 15: the door at least 0.9x Redis at ``-P 1`` and at least
  0.45x at ``-P 16`` (moonshot 0.6x); the minimal server measured about 1.1x and 0.45x.
* A 3-node cluster over TCP (a cluster secret, ``replica_count`` 2, seeds at the first node)
  with a door on each: redis-benchmark against one node's door, then three at once against
  the three doors (their requests/s summed).
* The parser: ``hiredis.Reader`` against a parser in Python (bulk-string arrays through
  ``bytes.find`` and ``int``) and against GridKV's own ``RequestParser``, on the same
  pipelined input (16 SETs of 100-byte values, 16 GETs), in microseconds per command.

Each redis-benchmark run is sized for about ``--seconds`` (a short run of both tests first
measures each server's rate, and warms it up). redis-benchmark shares the machine's cores with
the servers: on 2 cores its own CPU is part of every figure.

Needs ``redis-server`` and ``redis-benchmark`` (Debian: ``apt-get install redis-server
redis-tools``; ``nox -s resp`` installs them, and redis-py).

    python bench/resp.py [--quick] [--seconds S] [--rounds N] [--keyspace N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import redis
from _common import server_process, write
from gridkv.base.config import OTHER_ENV
from gridkv.base.eventloop import loop_name, new_event_loop, run
from gridkv.base.options import Options
from gridkv.security.identity import new_secret
from gridkv.service.resp.protocol import RequestParser
from gridkv.testing.transports import free_port
from latency_floor import process_cpu
from vs_redis import redis_server

CLIENTS = 50
VALUE_BYTES = 100
PIPELINES = (1, 16)
TESTS = ("set", "get")
#: Targets of issue 15: the door's requests/s over Redis's, by pipeline depth.
TARGETS = {1: 0.9, 16: 0.45}
MOONSHOT_P16 = 0.6
#: Requests of the short run that measures a server's rate (and warms it up) before the
#: measured runs: a fraction of a second against redis-server, 1-2 s against the cluster.
PROBE_REQUESTS = {1: 10_000, 16: 30_000}
INSTALL = (
    "apt-get install redis-server redis-tools (Debian), or run `nox -s resp`, which installs them"
)


# -- redis-benchmark ---------------------------------------------------------------------------


def _binaries() -> tuple[str, str]:
    """redis-benchmark's and redis-server's paths; exits saying how to install them."""
    benchmark, server = shutil.which("redis-benchmark"), shutil.which("redis-server")
    if benchmark is None or server is None:
        missing = [
            n for n, p in (("redis-benchmark", benchmark), ("redis-server", server)) if not p
        ]
        sys.exit(f"{' and '.join(missing)} not found: {INSTALL}")
    return benchmark, server


def _children_cpu() -> float:
    """Seconds of CPU the children this process has waited for have used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def benchmark(
    binary: str,
    ports: list[int],
    tests: str,
    pipeline: int,
    requests: int,
    keyspace: int,
    pids: list[int],
) -> dict[str, Any]:
    """One redis-benchmark per port, all at once, each making ``requests`` of each test.

    :returns: requests/s per test summed over the ports (each client's own rate), the wall
        time, and the CPU each of ``pids`` and the clients used meanwhile, in percent of one
        core.
    """
    command = [binary, "-h", "127.0.0.1", "-c", str(CLIENTS), "-d", str(VALUE_BYTES)]
    command += ["-t", tests, "-P", str(pipeline), "-n", str(requests), "--csv"]
    if keyspace:
        command += ["-r", str(keyspace)]
    servers_before = [process_cpu(pid) for pid in pids]
    clients_before = _children_cpu()
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*command, "-p", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    wall = time.perf_counter() - started
    servers = [
        100 * (process_cpu(pid) - before) / wall
        for pid, before in zip(pids, servers_before, strict=True)
    ]
    clients = 100 * (_children_cpu() - clients_before) / wall
    rps: dict[str, float] = {}
    per_client: list[dict[str, float]] = []
    for port, proc, (out, err) in zip(ports, procs, outputs, strict=True):
        rows = {row["test"].lower(): float(row["rps"]) for row in csv.DictReader(out.splitlines())}
        if proc.returncode != 0 or set(rows) != set(tests.split(",")):
            raise RuntimeError(f"{' '.join(command)} -p {port}: exit {proc.returncode}: {out}{err}")
        per_client.append(rows)
        for test, rate in rows.items():
            rps[test] = rps.get(test, 0.0) + rate
    return {
        "requests": requests * len(ports),
        "rps": rps,
        "per_client_rps": per_client,
        "wall_s": wall,
        "server_cpu_pct": servers,
        "client_cpu_pct": clients,
    }


def sized(rate: float, seconds: float, clients: int) -> int:
    """Requests for each of ``clients`` redis-benchmarks to last about ``seconds`` at ``rate``
    (their summed requests/s), a round number."""
    return max(10_000, int(round(rate * seconds / clients, -4)))


# -- the servers -------------------------------------------------------------------------------


def _node_env(settings: dict[str, str]) -> dict[str, str]:
    """The environment of a ``gridkv node``: this one without its options' GRIDKV_ variables
    (``GRIDKV_NO_UVLOOP`` stays), and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDKV_") or k in OTHER_ENV}
    env.update(settings)
    return env


@contextlib.contextmanager
def gridkv_nodes(settings: list[dict[str, str]], logs: Path) -> Iterator[list[int]]:
    """``gridkv node`` processes, one per mapping of ``GRIDKV_*`` variables, for the block.

    The block gets their pids. Each logs to ``logs/<i>.log``; they stop on SIGTERM at the end.
    """
    procs: list[subprocess.Popen[bytes]] = []
    logs.mkdir(exist_ok=True)
    try:
        for i, env in enumerate(settings):
            with open(logs / f"{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gridkv.cli", "node"],
                        env=_node_env(env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def node_settings(
    node_id: str, port: int, door: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """A node's ``GRIDKV_*`` variables: TCP on ``port``, the door on ``door``, warnings only."""
    return {
        "GRIDKV_LOCAL_NODE_ID": node_id,
        "GRIDKV_LOCAL_ADDRESS": f"127.0.0.1:{port}",
        "GRIDKV_NETWORK__TYPE": "tcp",
        "GRIDKV_RESP__LISTEN": f"127.0.0.1:{door}",
        "GRIDKV_LOG__LEVEL": "warning",
        **(extra or {}),
    }


def wait_doors(ports: list[int], members: int, logs: Path, timeout: float = 60.0) -> None:
    """Wait until every door answers PING and its ``INFO gridkv`` says ``cluster_ready:1`` and
    ``members_alive:<members>``."""
    deadline = time.monotonic() + timeout
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            while True:
                try:
                    client.ping()
                    info = client.info("gridkv")
                    if info.get("cluster_ready") == 1 and info.get("members_alive") == members:
                        break
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    tails = "".join(
                        f"\n--- {log.name}:\n{log.read_text()[-2000:]}"
                        for log in sorted(logs.glob("*.log"))
                    )
                    raise TimeoutError(f"the door on port {port} not ready in {timeout} s{tails}")
                time.sleep(0.05)
        finally:
            client.close()


def _redis_pid(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


# -- the minimal asyncio RESP server -----------------------------------------------------------
# Inline on purpose, as a baseline must be: each reply is built where the command is read.


class MinimalResp(asyncio.Protocol):
    """GET and SET on a shared dict (and what redis-benchmark asks first), one write per read."""

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.reader = hiredis.Reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        reader, store = self.reader, self.store
        reader.feed(data)
        out = []
        while (command := reader.gets()) is not False:
            name = command[0]
            if name == b"GET" and len(command) == 2:
                value = store.get(command[1])
                out.append(b"$-1\r\n" if value is None else b"$%d\r\n%b\r\n" % (len(value), value))
            elif name == b"SET" and len(command) == 3:
                store[command[1]] = command[2]
                out.append(b"+OK\r\n")
            else:
                out.append(self.other(command))
        if out:
            self.transport.write(b"".join(out))

    def other(self, command: list[bytes]) -> bytes:
        """Any command but an upper-case GET or SET of the right length."""
        name = command[0].upper()
        if name == b"GET" and len(command) == 2:
            value = self.store.get(command[1])
            return b"$-1\r\n" if value is None else b"$%d\r\n%b\r\n" % (len(value), value)
        if name == b"SET" and len(command) == 3:
            self.store[command[1]] = command[2]
            return b"+OK\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"CONFIG" and len(command) == 3:  # redis-benchmark asks for two settings
            key = command[2]
            return b"*2\r\n$%d\r\n%b\r\n$0\r\n\r\n" % (len(key), key)
        return b"-ERR unknown command\r\n"


async def serve_minimal(port: int) -> None:
    """The minimal server on ``port`` until standard input closes."""
    loop = asyncio.get_running_loop()
    store: dict[bytes, bytes] = {}
    server = await loop.create_server(lambda: MinimalResp(store), "127.0.0.1", port)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


# -- 1. one node -------------------------------------------------------------------------------


def one_node(binary: str, seconds: float, rounds: int, keyspace: int, logs: Path) -> dict[str, Any]:
    """The three servers at once, taking turns: for each depth and test, ``rounds`` rounds of
    one run against each; the best round of each server counts (the others are kept)."""
    node_port, door, minimal_port = free_port(), free_port(), free_port()
    settings = node_settings("door", node_port, door, {"GRIDKV_DISABLE_AUTH": "true"})
    rows: list[dict[str, Any]] = []
    with (
        redis_server() as redis_port,
        gridkv_nodes([settings], logs) as (node_pid,),
        server_process(__file__, "--minimal", str(minimal_port)) as minimal,
    ):
        wait_doors([door], 1, logs)
        servers = {
            "redis-server": (redis_port, _redis_pid(redis_port)),
            "GridKV door": (door, node_pid),
            "minimal asyncio": (minimal_port, minimal.pid),
        }
        for pipeline in PIPELINES:
            # Each run is sized by the server's last rate: the probe's, then its own runs'.
            rates = {
                name: benchmark(
                    binary, [port], "set,get", pipeline, PROBE_REQUESTS[pipeline], keyspace, []
                )["rps"]
                for name, (port, _) in servers.items()
            }
            for test in TESTS:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
                for _ in range(rounds):
                    for name, (port, pid) in servers.items():
                        requests = sized(rates[name][test], seconds, 1)
                        got = benchmark(binary, [port], test, pipeline, requests, keyspace, [pid])
                        rates[name][test] = got["rps"][test]
                        runs[name].append(
                            {
                                "requests": requests,
                                "rps": got["rps"][test],
                                "wall_s": got["wall_s"],
                                "server_cpu_pct": got["server_cpu_pct"][0],
                                "client_cpu_pct": got["client_cpu_pct"],
                            }
                        )
                for name, got_runs in runs.items():
                    best = max(got_runs, key=lambda r: float(r["rps"]))
                    rows.append(
                        {
                            "server": name,
                            "test": test.upper(),
                            "pipeline": pipeline,
                            **best,
                            "rounds_rps": [r["rps"] for r in got_runs],
                        }
                    )
    ratios: dict[str, float] = {}
    for row in rows:
        base = next(
            r["rps"]
            for r in rows
            if r["server"] == "redis-server"
            and r["test"] == row["test"]
            and r["pipeline"] == row["pipeline"]
        )
        row["x_redis"] = row["rps"] / base
        if row["server"] != "redis-server":
            ratios[f"{row['server']} {row['test']} -P {row['pipeline']}"] = row["x_redis"]
    # Each target against the door's worse test of the two at that depth.
    worst = {p: min(ratios[f"GridKV door {t.upper()} -P {p}"] for t in TESTS) for p in PIPELINES}
    goals = [
        (f"door at least {t}x Redis at -P {p} (SET and GET)", p, t) for p, t in TARGETS.items()
    ]
    goals.append((f"moonshot: door at least {MOONSHOT_P16}x Redis at -P 16", 16, MOONSHOT_P16))
    return {
        "rows": rows,
        "ratios": ratios,
        "targets_met": {name: worst[p] >= target for name, p, target in goals},
        "target_figures": {name: worst[p] for name, p, _ in goals},
    }


def print_one_node(result: dict[str, Any]) -> None:
    print(
        f"{'test':<5}{'-P':>4}  {'server':<17}{'requests/s':>12}{'x Redis':>9}"
        f"{'server CPU':>12}{'redis-benchmark CPU':>21}"
    )
    for row in result["rows"]:
        print(
            f"{row['test']:<5}{row['pipeline']:>4}  {row['server']:<17}{row['rps']:>12,.0f}"
            f"{row['x_redis']:>8.2f}x{row['server_cpu_pct']:>11.0f}%{row['client_cpu_pct']:>20.0f}%"
        )
    for target, met in result["targets_met"].items():
        print(
            f"  {'met   ' if met else 'MISSED'}  {target}: {result['target_figures'][target]:.3f}x"
        )


# -- 2. a 3-node cluster -----------------------------------------------------------------------


def cluster(binary: str, seconds: float, keyspace: int, logs: Path) -> dict[str, Any]:
    """Three nodes with a door each: one door, then all three at once, by depth and test."""
    secret = new_secret()
    ports = [free_port() for _ in range(3)]
    doors = [free_port() for _ in range(3)]
    seed = f"[127.0.0.1:{ports[0]}]"
    settings = [
        node_settings(
            f"n{i}",
            ports[i],
            doors[i],
            {
                "GRIDKV_REPLICA_COUNT": "2",
                "GRIDKV_AUTH__CLUSTER_SECRET": secret,
                **({"GRIDKV_SEED_ADDRS": seed} if i else {}),
            },
        )
        for i in range(3)
    ]
    rows: list[dict[str, Any]] = []
    with gridkv_nodes(settings, logs) as pids:
        wait_doors(doors, 3, logs)
        for pipeline in PIPELINES:
            # Sized by the one door's rates: the probe first, then the one door's own runs
            # (three doors at once, on these cores, make about what one does).
            rates = benchmark(
                binary, doors[:1], "set,get", pipeline, PROBE_REQUESTS[pipeline], keyspace, []
            )["rps"]
            for label, targets in (("one door", doors[:1]), ("three doors at once", doors)):
                for test in TESTS:
                    requests = sized(rates[test], seconds, len(targets))
                    got = benchmark(binary, targets, test, pipeline, requests, keyspace, pids)
                    if len(targets) == 1:
                        rates[test] = got["rps"][test]
                    rows.append(
                        {
                            "doors": label,
                            "test": test.upper(),
                            "pipeline": pipeline,
                            "requests": got["requests"],
                            "rps": got["rps"][test],
                            "per_client_rps": [c[test] for c in got["per_client_rps"]],
                            "wall_s": got["wall_s"],
                            "node_cpu_pct": got["server_cpu_pct"],
                            "client_cpu_pct": got["client_cpu_pct"],
                        }
                    )
    return {"nodes": 3, "replica_count": 2, "rows": rows}


def print_cluster(result: dict[str, Any]) -> None:
    print(
        f"{'test':<5}{'-P':>4}  {'doors':<21}{'requests/s':>12}"
        f"{'node CPU n0/n1/n2':>20}{'redis-benchmark CPU':>21}"
    )
    for row in result["rows"]:
        cpus = "/".join(f"{c:.0f}" for c in row["node_cpu_pct"])
        print(
            f"{row['test']:<5}{row['pipeline']:>4}  {row['doors']:<21}{row['rps']:>12,.0f}"
            f"{cpus + ' %':>20}{row['client_cpu_pct']:>20.0f}%"
        )


# -- 3. the parser -----------------------------------------------------------------------------


class PythonRequestParser:
    """Requests (arrays of bulk strings) parsed in Python: ``bytes.find`` and ``int``.

    The straightforward alternative to hiredis: :meth:`feed` takes bytes, :meth:`next`
    returns the next complete command or ``None``.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buffer):
            self._buffer = data
        elif self._pos:
            self._buffer = self._buffer[self._pos :] + data
        else:
            self._buffer += data
        self._pos = 0

    def next(self) -> list[bytes] | None:
        buffer, pos = self._buffer, self._pos
        size = len(buffer)
        if pos >= size:
            return None
        if buffer[pos] != 0x2A:  # "*"
            raise ValueError(f"expected '*' at {pos}")
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        count = int(buffer[pos + 1 : end])
        pos = end + 2
        args: list[bytes] = []
        for _ in range(count):
            if pos >= size:
                return None
            if buffer[pos] != 0x24:  # "$"
                raise ValueError(f"expected '$' at {pos}")
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return None
            start = end + 2
            stop = start + int(buffer[pos + 1 : end])
            if stop + 2 > size:
                return None
            args.append(buffer[start:stop])
            pos = stop + 2
        self._pos = pos
        return args


def _encode(command: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    parts += [b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in command]
    return b"".join(parts)


def pipelined(name: bytes, count: int = 16) -> tuple[bytes, list[list[bytes]]]:
    """``count`` pipelined SETs (100-byte values) or GETs: the bytes, and the commands."""
    commands = []
    for i in range(count):
        key = b"key:%012d" % (i * 7919)
        commands.append([name, key, b"x" * VALUE_BYTES] if name == b"SET" else [name, key])
    return b"".join(_encode(c) for c in commands), commands


def _hiredis(data: bytes) -> Callable[[], list[Any]]:
    reader = hiredis.Reader()

    def parse() -> list[Any]:
        reader.feed(data)
        out = []
        while (command := reader.gets()) is not False:
            out.append(command)
        return out

    return parse


def _stateful(parser: PythonRequestParser | RequestParser, data: bytes) -> Callable[[], list[Any]]:
    def parse() -> list[Any]:
        parser.feed(data)
        out = []
        while (command := parser.next()) is not None:
            out.append(command)
        return out

    return parse


def parsers(rounds: int, loops: int) -> dict[str, Any]:
    """Microseconds per command of each parser on each input: the median of ``rounds``
    rounds of ``loops`` passes, the parsers taking turns round by round."""
    out: dict[str, Any] = {}
    limits = Options(local_node_id="bench").resp  # the door's defaults
    for name in (b"SET", b"GET"):
        data, expected = pipelined(name)
        calls = {
            "hiredis.Reader": _hiredis(data),
            "Python (bytes.find, int)": _stateful(PythonRequestParser(), data),
            "gridkv RequestParser": _stateful(
                RequestParser(limits.max_args, limits.max_query_bytes), data
            ),
        }
        for label, call in calls.items():
            if call() != expected:
                raise AssertionError(f"{label} parsed {name.decode()} wrongly")
        samples: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(rounds):
            for label, call in calls.items():
                start = time.perf_counter_ns()
                for _ in range(loops):
                    call()
                samples[label].append((time.perf_counter_ns() - start) / loops / len(expected))
        us = {label: sorted(s)[len(s) // 2] / 1000 for label, s in samples.items()}
        out[name.decode()] = {
            "commands": len(expected),
            "bytes": len(data),
            "us_per_command": us,
            "python_over_hiredis": us["Python (bytes.find, int)"] / us["hiredis.Reader"],
            "gridkv_over_hiredis": us["gridkv RequestParser"] / us["hiredis.Reader"],
        }
    return out


def print_parsers(result: dict[str, Any]) -> None:
    for name, fig in result.items():
        print(f"  {fig['commands']} pipelined {name}s ({fig['bytes']:,} bytes):")
        for label, us in fig["us_per_command"].items():
            print(f"    {label:<26}{us:>7.3f} us/command")
        print(
            f"    Python / hiredis {fig['python_over_hiredis']:.2f}x, "
            f"gridkv RequestParser / hiredis {fig['gridkv_over_hiredis']:.2f}x"
        )


def main() -> None:
    """Run the three parts, print them, write ``bench/results/resp.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1.5 s runs, one round (about 40 s in all)"
    )
    parser.add_argument(
        "--seconds", type=float, help="about how long each redis-benchmark run lasts (4; quick 1.5)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds of the one-node runs; the best counts (2; quick 1)"
    )
    parser.add_argument(
        "--keyspace",
        type=int,
        default=100_000,
        help="redis-benchmark -r: keys spread over this many (0: one key), 100,000",
    )
    parser.add_argument("--minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal:
        run(serve_minimal(args.minimal))
        return
    binary, _ = _binaries()
    seconds = args.seconds or (1.5 if args.quick else 4.0)
    rounds = args.rounds or (1 if args.quick else 2)
    loop = new_event_loop()
    loop_kind = loop_name(loop)
    loop.close()
    cores = os.cpu_count()
    keys = f"-r {args.keyspace}" if args.keyspace else "one key"
    print(
        f"redis-benchmark -c {CLIENTS} -d {VALUE_BYTES} {keys}, about {seconds:g} s a run; "
        f"servers on {loop_kind}; {cores} cores, which redis-benchmark shares with the servers "
        "(its CPU is part of every figure)"
    )
    took: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gridkv-bench-resp-") as tmp:
        started = time.monotonic()
        print(
            "\n1. one node: GridKV's door, redis-server and a minimal asyncio RESP server "
            f"(the best of {rounds} round{'s' if rounds > 1 else ''})"
        )
        single = one_node(binary, seconds, rounds, args.keyspace, Path(tmp, "one_node"))
        print_one_node(single)
        took["one_node"] = time.monotonic() - started
        started = time.monotonic()
        print("\n2. a 3-node cluster over TCP, replica_count 2, a door on each node")
        multi = cluster(binary, seconds, args.keyspace, Path(tmp, "cluster"))
        print_cluster(multi)
        took["cluster"] = time.monotonic() - started
    started = time.monotonic()
    print("\n3. the request parser, the median of 7 rounds")
    parsing = parsers(7, 500 if args.quick else 2000)
    print_parsers(parsing)
    took["parser"] = time.monotonic() - started
    print("\n" + ", ".join(f"{part} {s:.0f} s" for part, s in took.items()))
    data: dict[str, Any] = {
        "params": {
            "clients": CLIENTS,
            "value_bytes": VALUE_BYTES,
            "keyspace": args.keyspace,
            "seconds": seconds,
            "rounds": rounds,
            "loop": loop_kind,
            "note": "redis-benchmark runs on the same cores as the servers",
        },
        "one_node": single,
        "cluster": multi,
        "parser": parsing,
        "targets_met": single["targets_met"],
        "took_s": took,
    }
    print(f"\nwritten to {write('resp', data)}")


if __name__ == "__main__":
    main()
