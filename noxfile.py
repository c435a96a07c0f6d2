"""Nox sessions: lint, typecheck, tests (one per transport), plugins; on request, fuzz and bench.

Distributions are installed non-editable, as users get them, so a missing entry point, a file
left out of a wheel or a missing ``py.typed`` fails here rather than on a user's machine.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "plugins"]
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
CORE = "./gridkv-core"
PLUGIN_DISTS = [
    "./gridkv-transport-tcp[uvloop]",
    "./gridkv-transport-quic[uvloop]",
    "./gridkv-metrics",
]
TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.23",
    "hypothesis>=6.100",
    "opentelemetry-sdk>=1.30",
    "redis>=5",  # redis-py against the RESP door
    "django>=4.2",  # gridkv.contrib.django against Django's cache tests
    "gunicorn>=22",  # the example app run with 4 workers (GridKV.for_workers)
]

# Transports the suites run over: the distributions each needs besides gridkv-core, and the
# test directories it runs. "memory" lives in gridkv-core; "tcp" and "quic" bring their own
# suites (conformance, TLS, hostile peers) and run the core suites and the clusters of real
# processes over their network too (quic nodes get certificates of a test CA).
TRANSPORTS: dict[str, dict[str, list[str]]] = {
    "memory": {"install": [], "paths": ["gridkv-core/tests", "tests"]},
    "tcp": {
        "install": ["./gridkv-transport-tcp[uvloop]", "cryptography>=42"],
        "paths": ["gridkv-core/tests", "gridkv-transport-tcp/tests", "tests"],
    },
    "quic": {
        "install": ["./gridkv-transport-quic[uvloop]"],
        "paths": ["gridkv-core/tests", "gridkv-transport-quic/tests", "tests"],
    },
}
# Plugin distributions besides the transports; their tests run in the "plugins" session, with
# both transports installed (where network.type picks one).
OTHER_PLUGINS = ["./gridkv-metrics"]
# The example plugin distributions a plugin author copies from (docs/plugins.md, "Example
# plugin packages"): installed as users get them and tested in the "plugins" session too.
EXAMPLE_PLUGINS = [
    "./examples/plugins/gridkv-storage-snapshot",
    "./examples/plugins/gridkv-auth-secretsdir",
]
BOTH_TRANSPORTS = ["./gridkv-transport-tcp[uvloop]", "./gridkv-transport-quic[uvloop]"]
# The fuzz tests (marked "fuzz") of the wire codec, the config loader, the stream frame reader and
# the authenticator's decoders,
# and the inputs each tries in the "fuzz" session (the default run tries a few hundred).
FUZZ_PATHS = ["gridkv-core/tests"]
FUZZ_ENV = "GRIDKV_FUZZ_EXAMPLES"
FUZZ_EXAMPLES = 100_000
# Every benchmark docs/benchmarks.md describes, quickest first: one node, then memory, then
# simulated clusters, then real processes over TCP and QUIC.
BENCHMARKS = [
    "local_ops",
    "memory",
    "membership",
    "replication",
    "cluster_tcp",
    "cluster_quic",
    "metrics",
    "bulk",
    "cache_patterns",
    "attack_tcp",
    "hardening",
    "auth",
    "codec",
]
# The fault tests of real processes at length (the default run makes two fault cycles).
FAULT_TESTS = ["tests/test_process_faults.py"]
FAULT_CYCLES = "20"


def _apt_install(session: nox.Session, command: str, package: str) -> None:
    """Install a Debian package with apt-get when ``command`` is missing (needs root)."""
    session.run(
        "sh",
        "-c",
        f"command -v {command} >/dev/null || "
        f"(apt-get update -qq && apt-get install -y -qq {package})",
        external=True,
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every distribution, the tests, the benchmarks and the examples."""
    session.install(
        CORE,
        *PLUGIN_DISTS,
        *TEST_DEPS,
        "mypy==2.4.1",
        "types-PyYAML",
        "cachetools",
        "types-cachetools",
        "cryptography>=42",
        "redis",  # bench/vs_redis.py (redis-py has its own type hints)
        "nox",
    )
    session.run("mypy")


@nox.session(python=PYTHON)
@nox.parametrize("transport", list(TRANSPORTS), ids=[f"transport={t}" for t in TRANSPORTS])
def tests(session: nox.Session, transport: str) -> None:
    """The suites over one transport, with only the distributions that transport needs."""
    spec = TRANSPORTS[transport]
    if transport != "memory":  # redis-cli against the RESP door of a process cluster
        _apt_install(session, "redis-cli", "redis-tools")
    session.install(CORE, *spec["install"], *TEST_DEPS)
    session.run(
        "pytest",
        *(session.posargs or spec["paths"]),
        env={"GRIDKV_TEST_TRANSPORT": transport},
    )


@nox.session(python=PYTHON)
def plugins(session: nox.Session) -> None:
    """Every plugin distribution installed together: gridkv-metrics' tests (a real scrape, a
    real OTLP export), each transport's entry point, ``network.type`` picking one, and the
    example plugins of ``examples/plugins/`` with their own tests (the storage conformance
    suite, warm restarts, clusters authenticated from secrets directories)."""
    session.install(CORE, *BOTH_TRANSPORTS, *OTHER_PLUGINS, *EXAMPLE_PLUGINS, *TEST_DEPS)
    session.run(
        "pytest",
        *(p.removeprefix("./") + "/tests" for p in [*OTHER_PLUGINS, *EXAMPLE_PLUGINS]),
        "gridkv-transport-tcp/tests/test_entry_point.py",
        "gridkv-transport-quic/tests/test_entry_point.py",
    )


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The fuzz tests at length: 100,000 inputs each. Not part of the default run.

    ``nox -s fuzz -- [COUNT] [PYTEST ARGS]``: a first argument that is a number sets the
    inputs per test (as ``GRIDKV_FUZZ_EXAMPLES`` in the environment also does); the rest
    replace the test paths (``-- 1000 gridkv-core/tests/test_fuzz_codec.py``).
    """
    args = list(session.posargs)
    examples = os.environ.get(FUZZ_ENV, str(FUZZ_EXAMPLES))
    if args and args[0].isdigit():
        examples = args.pop(0)
    session.install(CORE, *TRANSPORTS["tcp"]["install"], *TEST_DEPS)
    session.run(
        "pytest",
        "-m",
        "fuzz",
        "--durations=0",  # the time of every fuzz test, to keep each under a few minutes
        *(args or FUZZ_PATHS),
        env={FUZZ_ENV: examples},
    )


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """The fault tests of real TCP processes at length: 20 cycles of partitions and
    isolations (``GRIDKV_FAULT_CYCLES`` sets another count). Not part of the default run."""
    session.install(CORE, *TRANSPORTS["tcp"]["install"], *TEST_DEPS)
    session.run(
        "pytest",
        *(session.posargs or FAULT_TESTS),
        env={
            "GRIDKV_TEST_TRANSPORT": "tcp",
            "GRIDKV_FAULT_CYCLES": os.environ.get("GRIDKV_FAULT_CYCLES", FAULT_CYCLES),
        },
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark in bench/, one after another; figures go to bench/results/.

    ``nox -s bench -- membership replication`` runs only the named ones; arguments that start
    with ``-`` are passed to each (``-- membership --quick``).
    """
    names = [arg for arg in session.posargs if not arg.startswith("-")]
    flags = [arg for arg in session.posargs if arg.startswith("-")]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        session.error(f"no benchmark named {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    session.install(CORE, *BOTH_TRANSPORTS, *OTHER_PLUGINS, "cachetools")
    for name in names or BENCHMARKS:
        session.run("python", f"bench/{name}.py", *flags)


@nox.session(python=PYTHON)
def vs_redis(session: nox.Session) -> None:
    """GridKV against redis-server and redis-py (hiredis) side by side (bench/vs_redis.py),
    then where a round trip's time goes on each side (bench/latency_floor.py).

    Installs redis-server with apt-get when it is missing (Debian; needs root). Arguments
    go to vs_redis.
    """
    _apt_install(session, "redis-server", "redis-server")
    session.install(CORE, "./gridkv-transport-tcp[uvloop]", "redis[hiredis]")
    session.run("python", "bench/vs_redis.py", *session.posargs)
    session.run("python", "bench/latency_floor.py")


@nox.session(python=PYTHON)
def resp(session: nox.Session) -> None:
    """The RESP door under redis-benchmark against redis-server and a minimal asyncio RESP
    server, a 3-node cluster's doors, and the request parsers (bench/resp.py).

    Installs redis-server and redis-tools (redis-benchmark) with apt-get when missing (Debian;
    needs root). Arguments go to resp (``nox -s resp -- --quick``).
    """
    _apt_install(session, "redis-server", "redis-server")
    _apt_install(session, "redis-benchmark", "redis-tools")
    session.install(CORE, "./gridkv-transport-tcp[uvloop]", "redis[hiredis]")
    session.run("python", "bench/resp.py", *session.posargs)
