from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gridkv_transport_quic")

from gridkv.testing.entry_points import check_entry_point


def test_the_plugin_is_declared_loads_and_can_be_disabled() -> None:
    check_entry_point("quic", "gridkv_transport_quic")


def test_network_type_picks_quic_and_tcp_stays_the_default(tmp_path: Path) -> None:
    from gridkv import ConfigError, Options
    from gridkv.node import Node
    from gridkv.plugins import Plugins
    from gridkv.security.certs import create_cluster_certs
    from gridkv_transport_quic.transport import QuicTransport

    plugins = Plugins()
    assert "quic" in plugins.transports()
    create_cluster_certs(str(tmp_path), ["n1"])
    ssl = {
        "enabled": True,
        "cert_file": str(tmp_path / "n1.crt"),
        "key_file": str(tmp_path / "n1.key"),
        "ca_file": str(tmp_path / "ca.crt"),
    }
    options = Options.from_mapping(
        {"local_address": "127.0.0.1:0", "network": {"type": "quic", "ssl": ssl}}
    )
    node = Node(options, plugins=plugins)
    assert node.transport_name == "quic"
    assert isinstance(node.transport, QuicTransport)
    with pytest.raises(ConfigError, match="gridkv certs create"):
        Node(Options(local_address="127.0.0.1:0", network={"type": "quic"}), plugins=plugins)  # type: ignore[arg-type]
    default = Node(Options(local_address="127.0.0.1:0"), plugins=plugins)
    expected = "tcp" if "tcp" in plugins.transports() else "memory"
    assert default.transport_name == expected
