"""The examples a user copies from run as they are."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import gridkv
import pytest
from gridkv.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    sys.argv = [script]
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert capsys.readouterr().out


def test_example_config_loads_and_drives_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    options = gridkv.load_config(EXAMPLES / "node.yaml")
    assert options.storage.eviction == "lru"
    assert main(["demo", "--config", str(EXAMPLES / "node.yaml")]) == 0
    assert "yaml-node" in capsys.readouterr().out
