"""``gridkv node``: a node in the foreground, configured by a file and GRIDKV_* variables,
closed gracefully by SIGTERM or SIGINT with exit status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gridkv import ConfigError
from gridkv.base.config import env_overrides
from gridkv.cli import main, node_options


def test_environment_variables_override_the_file_key_by_key(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("local_node_id: from-file\nreplica_count: 2\nnetwork:\n  max_conns: 4\n")
    env = {
        "GRIDKV_REPLICA_COUNT": "1",
        "GRIDKV_NETWORK__MAX_IDLE": "2",
        "GRIDKV_NETWORK__SSL__VERIFY_PEER": "false",
        "GRIDKV_SEED_ADDRS": "[10.0.0.1:7946, 10.0.0.2:7946]",
        "GRIDKV_NO_UVLOOP": "1",  # GridKV's, not a configuration key
        "HOME": "/root",
    }
    options = node_options(str(config), env)
    assert options.local_node_id == "from-file"
    assert options.replica_count == 1
    assert (options.network.max_conns, options.network.max_idle) == (4, 2)
    assert options.network.ssl.verify_peer is False
    assert options.seed_addrs == ["10.0.0.1:7946", "10.0.0.2:7946"]
    # A string key takes the text as it is (YAML would read 007 as 7).
    assert env_overrides({"GRIDKV_LOCAL_NODE_ID": "007"}) == {"local_node_id": "007"}


def test_a_variable_that_names_no_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"GRIDKV_NETWORK__MAX_CONN: no config key"):
        env_overrides({"GRIDKV_NETWORK__MAX_CONN": "4"})
    with pytest.raises(ConfigError, match=r"GRIDKV_NETWORK: 'network' is a section"):
        env_overrides({"GRIDKV_NETWORK": "x"})
    with pytest.raises(ConfigError, match=r"GRIDKV_REPLICA_COUNT__X: 'replica_count' is a key"):
        env_overrides({"GRIDKV_REPLICA_COUNT__X": "x"})


def test_help_lists_every_key_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["node", "--help"])
    text = capsys.readouterr().out
    assert "network.ssl.cert_file = ''  (GRIDKV_NETWORK__SSL__CERT_FILE)" in text
    assert "metrics.prometheus_addr" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_closes_the_node_gracefully_and_exits_0(signum: int) -> None:
    env = {
        **os.environ,
        "GRIDKV_LOCAL_NODE_ID": "cli-node",
        "GRIDKV_LOCAL_ADDRESS": "cli-node:7946",
        "GRIDKV_NETWORK__TYPE": "memory",
        "GRIDKV_LOG__NO_TIME": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gridkv.cli", "node"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + 30
    for line in process.stderr:  # until the node says it serves
        lines.append(line)
        if "serving until SIGINT or SIGTERM" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines) + rest
    assert "node closed" in rest


def test_a_bad_variable_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["GRIDKV_TYPO_KEY"] = "1"
    try:
        assert main(["node"]) == 1
    finally:
        del os.environ["GRIDKV_TYPO_KEY"]
    assert "GRIDKV_TYPO_KEY: no config key 'typo_key'" in capsys.readouterr().err
