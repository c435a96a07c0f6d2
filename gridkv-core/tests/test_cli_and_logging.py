from __future__ import annotations

import json
import logging
import re

import pytest
from gridkv.base.log import configure_logging
from gridkv.base.options import LogOptions
from gridkv.cli import main


def test_demo_runs_a_cluster_and_prints_the_stats_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "starting a 3-node cluster" in out
    assert "set    greeting on demo-0; demo-2 reads b'hello, grid'" in out
    assert "session:42 -> None" in out
    assert "delete greeting -> None" in out
    assert all(f"demo-{i} reads b'hello again'" in out for i in range(3))
    assert "delete on demo-1; demo-2 reads None" in out
    assert re.search(r"^cluster\.healthy_nodes +3$", out, re.MULTILINE)
    assert "storage.keys" in out


def test_demo_runs_a_single_node_from_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = '{"local_node_id": "solo", "local_address": "solo:1", "network": {"type": "memory"}}'
    assert main(["demo", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "starting node 'solo'" in out
    assert "set    greeting; solo reads b'hello, grid'" in out


def test_demo_reports_a_bad_config_as_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--config", '{"replica_count": 0}']) == 1
    assert "ConfigError" in capsys.readouterr().err


def test_json_log_format_writes_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    logger = configure_logging(LogOptions(format="json", no_caller=False, level="debug"))
    try:
        logger.info("hello", extra={"node_id": "n1"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["msg"] == "hello"
        assert record["level"] == "info"
        assert record["node_id"] == "n1"
        assert "caller" in record and "time" in record
    finally:
        configure_logging(LogOptions())


def test_text_log_format_leaves_out_time_and_caller_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = configure_logging(LogOptions(no_time=True, no_caller=True, level="info"))
    try:
        logger.warning("careful", extra={"peer": "p"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("WARNING gridkv careful peer=p")
        logger.debug("hidden")
        assert capsys.readouterr().err == ""
    finally:
        configure_logging(LogOptions())
    assert logging.getLogger("gridkv").level == logging.INFO
