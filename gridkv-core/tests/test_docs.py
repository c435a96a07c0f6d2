"""The documentation stays true: every hook and every option is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from gridkv.base.options import (
    LogOptions,
    MembershipOptions,
    NetworkOptions,
    Options,
    SslOptions,
    StorageOptions,
)
from gridkv.plugins import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not in this checkout")

HOOKS = [name for name in dir(hookspecs) if name.startswith("gridkv_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_plugins_md(hook: str) -> None:
    assert getattr(hookspecs, hook).__doc__
    assert re.search(rf"\b{hook}\b", (DOCS / "plugins.md").read_text())


OPTIONS = [f.name for f in dataclasses.fields(Options)] + [
    f"{prefix}.{f.name}"
    for prefix, cls in (
        ("network", NetworkOptions),
        ("network.ssl", SslOptions),
        ("storage", StorageOptions),
        ("membership", MembershipOptions),
        ("log", LogOptions),
    )
    for f in dataclasses.fields(cls)
]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_is_documented_in_configuration_md(option: str) -> None:
    assert f"`{option}`" in (DOCS / "configuration.md").read_text()
