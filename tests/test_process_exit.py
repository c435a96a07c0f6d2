"""What happens to a GridKV when its process exits without close(): the interpreter's exit
closes it gracefully (queued batches drained, partitions handed off, leave announced), within
EXIT_CLOSE_TIMEOUT. The nodes are real processes; the one over the network runs over the
transport under test (GRIDKV_TEST_TRANSPORT) and is skipped for memory, which does not cross
processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from gridkv.api.process import EXIT_CLOSE_TIMEOUT
from gridkv.testing.cluster import ProcessCluster
from gridkv.testing.transports import network_options, node_options, transport_under_test

TRANSPORT = transport_under_test()
KEYS = 3000
#: Signs in a child's standard error that something was left unfinished or leaked.
TROUBLE = ("Traceback", "Exception ignored", "never retrieved", "was destroyed", "never awaited")

# The child: a GridKV that joins the parent (or runs alone), writes, reports, and exits
# without close(). Its spec (argv[1]) holds the options and what to do.
CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    import gridkv
    from gridkv.api import process
    from gridkv.plugins import Plugins

    spec = json.loads(sys.argv[1])
    process.EXIT_CLOSE_TIMEOUT = spec.get("exit_timeout", process.EXIT_CLOSE_TIMEOUT)


    class BlocksItsClose:
        @gridkv.hookimpl
        def gridkv_node_stopping(self, node):
            threading.Event().wait()  # never returns: the close cannot finish


    plugins = Plugins()
    if spec.get("block_close"):
        plugins.register(BlocksItsClose(), name="blocks-its-close")
    kv = gridkv.GridKV(plugins=plugins, **spec["options"])
    kv.wait_ready(timeout=15)
    prefix, count = spec["prefix"], spec["count"]
    node = kv.node
    table = node.ensure_table()
    keys = [f"{prefix}{i}" for i in range(count)]
    owned = sum(node.node_id in table.owners(table.partition_of(k)) for k in keys)
    for i, key in enumerate(keys):
        kv.set(key, f"value-{i}".encode())
    queued = sum(len(batch.entries) for batch in node.coordinator.batcher.queued.values())
    print(json.dumps({"owned": owned, "queued": queued, "written_at": time.monotonic()}))
    # No close(): the interpreter's exit has to close the node.
    """
)


def run_child(spec: dict[str, Any], timeout: float = 60.0) -> tuple[dict[str, Any], str, float]:
    """Run the child to its exit; returns its report, its standard error, and the seconds
    from its last write to its exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # by its PID: only the process this test started
        out, err = proc.communicate()
        raise AssertionError(
            f"the child did not exit within {timeout:g}s:\n{err.decode()}"
        ) from None
    exited_at = time.monotonic()
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr
    report = json.loads(out.decode().strip().splitlines()[-1])
    return report, stderr, exited_at - report["written_at"]


@pytest.mark.skipif(TRANSPORT == "memory", reason="the memory transport does not cross processes")
def test_a_process_that_exits_without_close_drains_its_batches_and_leaves() -> None:
    options: dict[str, Any] = {
        "replica_count": 2,
        # Batches of 128 sent at once, and the rest held for a window longer than the
        # process lives: only the exit's drain can deliver the last ones.
        "batch_threshold": 128,
        "batch_window": "30s",
        "network": {"type": TRANSPORT},
    }
    with ProcessCluster(1, options, prefix="exit-parent") as cluster:
        parent = cluster.node(0)
        parent.call("wait_ready", timeout=15)
        child_options = {
            **options,
            "local_node_id": "exit-child",
            "local_address": "127.0.0.1:0",
            "network": network_options("exit-child"),
            "seed_addrs": [parent.address],
            "auth": cluster.options["auth"],
            "log": {"level": "warning"},
        }
        report, stderr, exit_seconds = run_child(
            {"options": child_options, "prefix": "exit:", "count": KEYS}
        )

        # Every key was the child's own, written at `one`, and some still queued at exit.
        assert report["owned"] == KEYS
        assert 0 < report["queued"] < 128  # full batches of batch_threshold went at once
        assert not [line for line in stderr.splitlines() if any(t in line for t in TROUBLE)]
        assert exit_seconds <= EXIT_CLOSE_TIMEOUT + 1

        def child_states() -> list[str]:
            return [change[3] for change in parent.call("changes", member="exit-child")]

        cluster.wait_for(
            "the parent sees the child leave",
            lambda: child_states()[-1:] == ["left"],
            timeout=10,
        )
        assert "dead" not in child_states()
        assert parent.call("local_missing", prefix="exit:", count=KEYS) == {
            "owned": KEYS,
            "missing": [],
        }


def test_exit_is_bounded_when_the_close_cannot_finish() -> None:
    # A stopping hook that never returns blocks the node's close on its loop thread; the exit
    # gives up on it after EXIT_CLOSE_TIMEOUT (1 s here) instead of hanging.
    options = {**node_options("exit-blocked"), "log": {"level": "warning"}}
    report, stderr, exit_seconds = run_child(
        {
            "options": options,
            "prefix": "k",
            "count": 10,
            "block_close": True,
            "exit_timeout": 1.0,
        },
        timeout=30,
    )
    assert report["owned"] == 10
    assert exit_seconds <= 1.0 + 1.5
    assert "the node did not close in time" in stderr
    assert "did not stop" in stderr
