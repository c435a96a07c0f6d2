"""The example plugins of docs/plugins.md work as printed: they pass the conformance suites and
run a two-node cluster.

Every ```python block of plugins.md whose first line is ``# <name>.py`` is written to a
directory as that file; the test modules among them run in a pytest of their own (as a
third-party author would run them, outside GridKV's configuration), and ``two_nodes.py`` runs
as a program.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not in this checkout")

_BLOCK = re.compile(r"```python\n# (\w+\.py)\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("plugin-examples")
    for name, code in _BLOCK.findall((DOCS / "plugins.md").read_text()):
        (where / name).write_text(code)
    return where


def _run(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plugins_md_holds_both_example_plugins_and_their_tests(examples: Path) -> None:
    assert {p.name for p in examples.iterdir()} >= {
        "gridkv_storage_dict.py",
        "test_gridkv_storage_dict.py",
        "gridkv_transport_simpletcp.py",
        "test_gridkv_transport_simpletcp.py",
        "two_nodes.py",
    }


def test_the_example_plugins_pass_the_conformance_suites(examples: Path) -> None:
    done = _run(
        examples,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "test_gridkv_storage_dict.py",
        "test_gridkv_transport_simpletcp.py",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Skipped: only the limit tests (dict has no limit) and the raw-bytes test.
    passed = re.search(r"(\d+) passed, 4 skipped", done.stdout)
    assert passed is not None, done.stdout
    assert int(passed[1]) >= 30


def test_two_nodes_run_on_the_example_plugins(examples: Path) -> None:
    done = _run(examples, "-W", "error", "two_nodes.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "b'alice' simpletcp dict"
