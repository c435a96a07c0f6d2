"""The node layer: :class:`Node` owns the components, wires them and routes what arrives."""

from __future__ import annotations

from gridkv.node.node import Node, NodeState, version

__all__ = ["Node", "NodeState", "version"]
