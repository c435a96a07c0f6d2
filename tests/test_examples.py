"""The examples a user copies from run as they are, and print what shows they worked."""

from __future__ import annotations

import importlib.util
import re
import runpy
import sys
from pathlib import Path

import gridkv
import pytest
from gridkv.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
TCP_INSTALLED = importlib.util.find_spec("gridkv_transport_tcp") is not None

#: Per example, patterns that must each match a whole line of what it prints.
EXPECTED: dict[str, list[str]] = {
    "basic_async.py": [
        r"b'alice'",  # the get after the set
        r"None",  # the get after the delete
        r"cluster\.local_node_id +example-1",
        r"cluster\.ready +yes",
        r"storage\.keys +0",
        r"storage\.tombstones +1",  # the delete left its tombstone
        r"example-1 +example-1:7946 +alive +\d+",
    ],
    "blocking_threads.py": [
        # 1000 requests over 50 distinct pages: each page rendered once and cached.
        r"served 1000 requests; cache holds 50 pages",
    ],
    "singleflight.py": [
        r"300 requests on 3 nodes, the loader ran 1 time\(s\)",
        r"every answer alike: True",
        r"the loader's own caller got: database down",
        r"b'fallback'",
    ],
    "cluster_over_tcp.py": (
        [rf"worker-{i} read 3 greetings: b'hello from worker 0'\.\.\." for i in range(3)]
        if TCP_INSTALLED
        else [r"install gridkv-transport-tcp to run this example"]
    ),
}


def test_every_example_says_what_it_must_print() -> None:
    assert sorted(EXPECTED) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_and_prints_what_shows_it_worked(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.argv = [script]
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    missing = [p for p in EXPECTED[script] if not any(re.fullmatch(p, line) for line in lines)]
    assert missing == [], f"{script} printed:\n" + "\n".join(lines)


def test_example_config_loads_and_drives_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    options = gridkv.load_config(EXAMPLES / "node.yaml")
    assert (options.local_node_id, options.network.type) == ("yaml-node", "memory")
    assert (options.storage.max_memory_mb, options.storage.eviction) == (64, "lru")
    assert main(["demo", "--config", str(EXAMPLES / "node.yaml")]) == 0
    out = capsys.readouterr().out
    assert "starting node 'yaml-node'" in out
    assert "set    greeting; yaml-node reads b'hello, grid'" in out
    assert re.search(r"^storage\.max_bytes +64\.0 MiB", out, re.MULTILINE)
