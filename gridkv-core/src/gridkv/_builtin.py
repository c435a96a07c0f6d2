"""GridKV's own backends, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gridkv.hookspecs import hookimpl

if TYPE_CHECKING:
    from gridkv.membership.base import Membership
    from gridkv.node import Node
    from gridkv.options import Options
    from gridkv.storage.base import Storage, StorageFactory
    from gridkv.transport.base import Transport, TransportFactory


def _memory_transport(options: Options) -> Transport:
    from gridkv.transport.memory import MemoryTransport

    return MemoryTransport.from_options(options)


def _swim(node: Node) -> Membership:
    from gridkv.membership.driver import SwimMembership

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
    register("memory", _memory_transport)


@hookimpl
def gridkv_register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    register("memory", _memory_storage)


@hookimpl
def gridkv_register_authenticators(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("none", _no_auth)


@hookimpl
def gridkv_register_membership(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("swim", _swim)
