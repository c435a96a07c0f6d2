"""Which transport a test suite runs over, chosen by ``GRIDKV_TEST_TRANSPORT``.

GridKV's suites run once per transport (the nox ``tests`` session sets the variable);
suites of code built on GridKV can do the same. Simulations always use the memory transport;
tests that start nodes through the public API take their options from :func:`node_options`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["TRANSPORT_ENV", "free_port", "node_options", "transport_under_test"]

#: Environment variable naming the transport under test; "memory" when unset.
TRANSPORT_ENV = "GRIDKV_TEST_TRANSPORT"


def transport_under_test() -> str:
    """The transport named by ``GRIDKV_TEST_TRANSPORT`` ("memory" when unset)."""
    return os.environ.get(TRANSPORT_ENV, "") or "memory"


def node_options(node_id: str) -> dict[str, Any]:
    """Options that put node ``node_id`` on the transport under test.

    Memory nodes get the address ``"<node_id>:7946"``; network transports listen on a free
    port of 127.0.0.1 (the address becomes known when the node starts).
    """
    kind = transport_under_test()
    address = f"{node_id}:7946" if kind == "memory" else "127.0.0.1:0"
    return {"local_node_id": node_id, "local_address": address, "network": {"type": kind}}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick).

    Another process may take it before the caller binds it; where that matters, listen on
    port 0 instead and read the port back (``local_address = "127.0.0.1:0"``).
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
