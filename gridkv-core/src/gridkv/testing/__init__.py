"""Tools for testing GridKV and code built on it: virtual time, clusters, conformance suites.

The storage suite (:class:`StorageConformance` and the helpers of
:mod:`gridkv.testing.storage_checks`) needs ``pytest`` and ``hypothesis`` (``pip install
'gridkv-core[test]'``); it is imported on first use, so the rest of this package works without
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gridkv.testing.simulation import SIMULATION_OPTIONS, Simulation
from gridkv.testing.virtual_time import VirtualTimeLoop, run_virtual

if TYPE_CHECKING:
    from gridkv.testing.storage_checks import (
        LimitedStorageMaker,
        ManualClock,
        StorageMaker,
        check_consistent,
        conformance_options,
    )
    from gridkv.testing.storage_conformance import StorageConformance

__all__ = [
    "Simulation",
    "SIMULATION_OPTIONS",
    "VirtualTimeLoop",
    "run_virtual",
    "StorageConformance",
    "StorageMaker",
    "LimitedStorageMaker",
    "ManualClock",
    "check_consistent",
    "conformance_options",
]

_LAZY = {
    "StorageConformance": "gridkv.testing.storage_conformance",
    "StorageMaker": "gridkv.testing.storage_checks",
    "LimitedStorageMaker": "gridkv.testing.storage_checks",
    "ManualClock": "gridkv.testing.storage_checks",
    "check_consistent": "gridkv.testing.storage_checks",
    "conformance_options": "gridkv.testing.storage_checks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gridkv.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
