"""Which transport a test suite runs over, chosen by ``GRIDKV_TEST_TRANSPORT``.

GridKV's suites run once per transport (the nox ``tests`` session sets the variable);
suites of code built on GridKV can do the same. Simulations always use the memory transport;
tests that start nodes through the public API take their options from :func:`node_options`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "TRANSPORT_ENV",
    "free_port",
    "network_options",
    "node_options",
    "tls_options",
    "transport_under_test",
]

#: Environment variable naming the transport under test; "memory" when unset.
TRANSPORT_ENV = "GRIDKV_TEST_TRANSPORT"


def transport_under_test() -> str:
    """The transport named by ``GRIDKV_TEST_TRANSPORT`` ("memory" when unset)."""
    return os.environ.get(TRANSPORT_ENV, "") or "memory"


def node_options(node_id: str) -> dict[str, Any]:
    """Options that put node ``node_id`` on the transport under test.

    Memory nodes get the address ``"<node_id>:7946"``; network transports listen on a free
    port of 127.0.0.1 (the address becomes known when the node starts). On ``quic``, which is
    mutual TLS, the node gets a certificate of this process's test CA (:func:`tls_options`).
    """
    kind = transport_under_test()
    address = f"{node_id}:7946" if kind == "memory" else "127.0.0.1:0"
    return {"local_node_id": node_id, "local_address": address, "network": network_options(node_id)}


def network_options(node_id: str) -> dict[str, Any]:
    """The ``network`` section of node ``node_id`` on the transport under test.

    On ``quic`` it holds the node's certificate (:func:`tls_options`).
    """
    kind = transport_under_test()
    if kind == "quic":
        return {"type": kind, "ssl": tls_options(node_id)}
    return {"type": kind}


_test_ca: list[Path] = []
_test_ca_lock = threading.Lock()


def tls_options(node_id: str) -> dict[str, Any]:
    """A ``network.ssl`` section for ``node_id``: its certificate from this process's test CA.

    The CA and the certificates are made at first use, as ``gridkv certs create`` and ``gridkv
    certs add`` make them, in a temporary directory removed when the process exits; every
    node of the process's tests trusts the same CA. Needs ``cryptography``.
    """
    from gridkv.security.certs import add_node_certs, create_cluster_certs

    with _test_ca_lock:
        if not _test_ca:
            directory = Path(tempfile.mkdtemp(prefix="gridkv-test-ca-"))
            atexit.register(shutil.rmtree, directory, True)
            create_cluster_certs(str(directory), [node_id], ca_name="gridkv test CA")
            _test_ca.append(directory)
        directory = _test_ca[0]
        if not (directory / f"{node_id}.crt").exists():
            add_node_certs(str(directory), [node_id])
    return {
        "enabled": True,
        "cert_file": str(directory / f"{node_id}.crt"),
        "key_file": str(directory / f"{node_id}.key"),
        "ca_file": str(directory / "ca.crt"),
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick).

    Another process may take it before the caller binds it; where that matters, listen on
    port 0 instead and read the port back (``local_address = "127.0.0.1:0"``).
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
