from __future__ import annotations

import pytest

pytest.importorskip("gridkv_metrics")

from gridkv.testing.entry_points import check_entry_point


def test_the_plugin_is_declared_loads_and_can_be_disabled() -> None:
    check_entry_point("metrics", "gridkv_metrics")
