"""GridKV's own backends, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gridkv.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.cluster.membership.base import Membership
    from gridkv.node import Node
    from gridkv.storage.base import Storage, StorageFactory
    from gridkv.transport.base import Transport, TransportFactory


def _memory_transport(options: Options) -> Transport:
    from gridkv.transport.memory import MemoryTransport

    return MemoryTransport.from_options(options)


def _swim(node: Node) -> Membership:
    from gridkv.cluster.membership.driver import SwimMembership

    return SwimMembership(node)


def _memory_storage(options: Options, *, clock: Callable[[], float]) -> Storage:
    from gridkv.storage.memory import MemoryStorage

    return MemoryStorage.from_options(options, clock=clock)


class _NoAuthentication:
    """The authenticator of ``disable_auth = True``: accepts every peer, signs nothing."""

    name = "none"

    def wrap(self, payload: bytes) -> bytes:
        return payload

    def unwrap(self, peer: str, payload: bytes) -> bytes:
        return payload


def _no_auth(options: Options) -> _NoAuthentication:
    return _NoAuthentication()


@hookimpl
def gridkv_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """The in-process "memory" transport."""
    register("memory", _memory_transport)


@hookimpl
def gridkv_register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    """The sharded in-memory storage backend "memory"."""
    register("memory", _memory_storage)


@hookimpl
def gridkv_register_authenticators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """The "none" authenticator of ``disable_auth = True``."""
    register("none", _no_auth)


@hookimpl
def gridkv_register_membership(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """SWIM with Lifeguard, "swim"."""
    register("swim", _swim)
