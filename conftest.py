"""Settings shared by every test directory."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Tests are deterministic: hypothesis draws from a fixed seed and keeps no example database,
# so a failure reproduces on every machine.
settings.register_profile(
    "gridkv",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("gridkv")
