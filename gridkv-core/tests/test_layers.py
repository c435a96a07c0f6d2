"""The layers of docs/architecture.md hold: no import cycle, no module importing from above."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layers", ROOT / "tools" / "layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gridkv_core_has_no_import_cycle_and_no_upward_import() -> None:
    layers = load_tool()
    edges = layers.graph(ROOT / "gridkv-core" / "src")
    assert layers.cycles(edges) == []
    assert layers.upward(edges) == []


def test_the_tool_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    layers = load_tool()
    package = tmp_path / "gridkv"
    (package / "base").mkdir(parents=True)
    (package / "node").mkdir()
    (package / "__init__.py").write_text("")
    (package / "base" / "__init__.py").write_text("")
    (package / "node" / "__init__.py").write_text("")
    (package / "base" / "clock.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gridkv.node import x\n"
    )
    (package / "node" / "x.py").write_text("from gridkv.base import clock\n")
    edges = layers.graph(tmp_path)
    assert layers.upward(edges) == [("gridkv.base.clock", "gridkv.node.x")]
    assert layers.cycles(edges) == [["gridkv.base.clock", "gridkv.node.x"]]
