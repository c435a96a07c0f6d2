from __future__ import annotations

import pytest
from gridkv.plugins import Plugins


@pytest.fixture
def plugins() -> Plugins:
    """A plugin manager of the test's own, with built-ins only, so inline plugins stay local."""
    return Plugins(load_entry_points=False)
