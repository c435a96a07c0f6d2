"""Nox sessions: lint, typecheck, tests (one per transport), bench.

Distributions are installed non-editable, as users get them, so a missing entry point, a file
left out of a wheel or a missing ``py.typed`` fails here rather than on a user's machine.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "plugins"]
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
CORE = "./gridkv-core"
PLUGIN_DISTS = ["./gridkv-transport-tcp[uvloop]", "./gridkv-transport-quic", "./gridkv-metrics"]
TEST_DEPS = ["pytest>=8", "pytest-asyncio>=0.23", "hypothesis>=6.100"]

# Transports the suites run over: the distributions each needs besides gridkv-core, and the
# test directories it runs. "memory" lives in gridkv-core; "tcp" brings its own suite (its
# conformance, TLS, and clusters of real processes) and runs the core suites over TCP too.
TRANSPORTS: dict[str, dict[str, list[str]]] = {
    "memory": {"install": [], "paths": ["gridkv-core/tests", "tests"]},
    "tcp": {
        "install": ["./gridkv-transport-tcp[uvloop]", "cryptography>=42"],
        "paths": ["gridkv-core/tests", "gridkv-transport-tcp/tests", "tests"],
    },
}
# Plugin distributions that hold only their packaging so far; their entry-point tests run in
# the "plugins" session.
PACKAGING_ONLY = ["./gridkv-transport-quic", "./gridkv-metrics"]


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
        "nox",
    )
    session.run("mypy")


@nox.session(python=PYTHON)
@nox.parametrize("transport", list(TRANSPORTS), ids=[f"transport={t}" for t in TRANSPORTS])
def tests(session: nox.Session, transport: str) -> None:
    """The suites over one transport, with only the distributions that transport needs."""
    spec = TRANSPORTS[transport]
    session.install(CORE, *spec["install"], *TEST_DEPS)
    session.run(
        "pytest",
        *(session.posargs or spec["paths"]),
        env={"GRIDKV_TEST_TRANSPORT": transport},
    )


@nox.session(python=PYTHON)
def plugins(session: nox.Session) -> None:
    """Entry-point tests of the plugin distributions that hold only their packaging so far."""
    session.install(CORE, *PACKAGING_ONLY, *TEST_DEPS)
    session.run("pytest", *(p.removeprefix("./") + "/tests" for p in PACKAGING_ONLY))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks; figures are printed and written to bench/results/."""
    session.install(CORE, "./gridkv-transport-tcp[uvloop]", "cachetools")
    for script in ("bench/local_ops.py", "bench/memory.py", "bench/cluster_tcp.py"):
        session.run("python", script, *session.posargs)
