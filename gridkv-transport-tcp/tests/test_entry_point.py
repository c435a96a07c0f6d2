from __future__ import annotations

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv.testing.entry_points import check_entry_point


def test_the_plugin_is_declared_loads_and_can_be_disabled() -> None:
    check_entry_point("tcp", "gridkv_transport_tcp")


def test_tcp_is_registered_and_is_the_default_transport() -> None:
    from gridkv import Options
    from gridkv.node import Node
    from gridkv.plugins import Plugins
    from gridkv_transport_tcp.transport import TcpTransport

    plugins = Plugins()
    assert "tcp" in plugins.transports()
    node = Node(Options(local_address="127.0.0.1:0"), plugins=plugins)
    assert node.transport_name == "tcp"
    assert isinstance(node.transport, TcpTransport)
