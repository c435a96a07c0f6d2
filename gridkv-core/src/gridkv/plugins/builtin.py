"""GridKV's own backends, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.cluster.context import MembershipContext
    from gridkv.cluster.membership.base import Membership, MembershipFactory
    from gridkv.security.base import Authenticator, AuthenticatorFactory
    from gridkv.storage.base import Storage, StorageFactory
    from gridkv.transport.base import Transport, TransportFactory


def _memory_transport(options: Options) -> Transport:
    from gridkv.transport.memory import MemoryTransport

    return MemoryTransport.from_options(options)


def _swim(ctx: MembershipContext) -> Membership:
    from gridkv.cluster.membership.driver import SwimMembership

    return SwimMembership(ctx)


def _memory_storage(options: Options, *, clock: Callable[[], float]) -> Storage:
    from gridkv.storage.memory import MemoryStorage

    return MemoryStorage.from_options(options, clock=clock)


def _no_auth(options: Options, *, clock: Callable[[], float]) -> Authenticator:
    from gridkv.security.none import NoAuthentication

    return NoAuthentication.from_options(options, clock=clock)


def _ed25519(options: Options, *, clock: Callable[[], float]) -> Authenticator:
    from gridkv.security.ed25519 import Ed25519Authenticator

    return Ed25519Authenticator(options, clock=clock)


@hookimpl
def gridkv_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """The in-process "memory" transport."""
    register("memory", _memory_transport)


@hookimpl
def gridkv_register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    """The sharded in-memory storage backend "memory"."""
    register("memory", _memory_storage)


@hookimpl
def gridkv_register_authenticators(
    register: Callable[[str, AuthenticatorFactory], None],
) -> None:
    """The "ed25519" authenticator (the default) and "none", of ``disable_auth = True``."""
    register("ed25519", _ed25519)
    register("none", _no_auth)


@hookimpl
def gridkv_register_membership(register: Callable[[str, MembershipFactory], None]) -> None:
    """SWIM with Lifeguard, "swim"."""
    register("swim", _swim)
