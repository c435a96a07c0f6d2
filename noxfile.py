"""Nox sessions: lint, typecheck, tests (one per transport), bench.

Distributions are installed non-editable, as users get them, so a missing entry point, a file
left out of a wheel or a missing ``py.typed`` fails here rather than on a user's machine.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
CORE = "./gridkv-core"
PLUGIN_DISTS = ["./gridkv-transport-tcp", "./gridkv-transport-quic", "./gridkv-metrics"]
TEST_DEPS = ["pytest>=8", "pytest-asyncio>=0.23", "hypothesis>=6.100"]

# Transports the suites run over, and the distributions each needs besides gridkv-core.
# "memory" lives in gridkv-core. The plugin distributions hold only their packaging so far;
# the memory run installs them too so their entry-point tests run.
TRANSPORTS: dict[str, list[str]] = {
    "memory": PLUGIN_DISTS,
}


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
        "nox",
    )
    session.run("mypy")


@nox.session(python=PYTHON)
@nox.parametrize("transport", list(TRANSPORTS), ids=[f"transport={t}" for t in TRANSPORTS])
def tests(session: nox.Session, transport: str) -> None:
    """The whole test suite with the distributions the transport needs."""
    session.install(CORE, *TRANSPORTS[transport], *TEST_DEPS)
    session.run(
        "pytest",
        *session.posargs,
        env={"GRIDKV_TEST_TRANSPORT": transport},
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks; figures are printed and written to bench/results/."""
    session.install(CORE, "cachetools")
    for script in ("bench/local_ops.py", "bench/memory.py"):
        session.run("python", script, *session.posargs)
