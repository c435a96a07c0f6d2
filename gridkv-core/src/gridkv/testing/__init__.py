"""Tools for testing GridKV and code built on it: virtual time and in-process clusters."""

from __future__ import annotations

from gridkv.testing.simulation import SIMULATION_OPTIONS, Simulation
from gridkv.testing.virtual_time import VirtualTimeLoop, run_virtual

__all__ = ["Simulation", "SIMULATION_OPTIONS", "VirtualTimeLoop", "run_virtual"]
