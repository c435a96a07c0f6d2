"""The hooks GridKV plugins implement.

A plugin is a module (or object) with functions marked ``@gridkv.hookimpl`` whose names are the
hooks below. Installed plugins are found through the ``gridkv.plugins`` entry-point group; the
entry point's name is the plugin's name. GridKV's own backends (the memory transport, the memory
storage, the "none" authenticator) register through these same hooks.

Hooks are synchronous. Registration hooks are called once when the plugin manager is set up
and receive a ``register`` callback; they register *factories* and must not do I/O or import
heavy dependencies (import those inside the factory). Lifecycle hooks are called on the node's
event loop thread and must return quickly; start background work with ``asyncio.create_task``.

Lifecycle hooks are isolated: GridKV calls each plugin's implementation on its own, and one
that raises is logged (logger ``"gridkv"``, naming the plugin and the hook, with the traceback)
while the other plugins still run; the exception never reaches the node, so a plugin's bug
cannot break a start, a close or membership. They cannot be wrappers (``wrapper=True`` or
``hookwrapper=True``): a plugin that tries is refused when it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.cluster.membership.base import MemberInfo, MembershipFactory
    from gridkv.security.base import AuthenticatorFactory
    from gridkv.storage.base import StorageFactory
    from gridkv.transport.base import TransportFactory

__all__ = [
    "PROJECT_NAME",
    "NodeHandle",
    "hookspec",
    "hookimpl",
    "gridkv_register_transports",
    "gridkv_register_storage",
    "gridkv_register_authenticators",
    "gridkv_register_membership",
    "gridkv_node_started",
    "gridkv_node_stopping",
    "gridkv_member_changed",
]

PROJECT_NAME = "gridkv"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class NodeHandle(Protocol):
    """What lifecycle hooks receive: the node, as far as a plugin should use it."""

    @property
    def node_id(self) -> str:
        """The node's id."""

    @property
    def options(self) -> Options:
        """The node's options."""

    def stats(self) -> Any:
        """A snapshot of the node's figures (a :class:`gridkv.Stats`)."""


# -- registration: called once, when the plugin manager loads ---------------------------------


@hookspec
def gridkv_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """Register transports.

    Call ``register(name, factory)`` once per transport. ``factory(options)`` returns a new,
    unstarted object implementing :class:`gridkv.transport.Transport`. ``network.type = name``
    selects it. Registering a name twice raises :class:`~gridkv.base.errors.ConfigError`.

    :param register: the registration callback.
    """


@hookspec
def gridkv_register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    """Register storage backends.

    Call ``register(name, factory)``; ``factory(options, *, clock)`` returns an object
    implementing :class:`gridkv.storage.Storage`; ``clock()`` is the node's wall clock in
    seconds, by which the backend judges TTLs and tombstones. ``storage.backend = name``
    selects it.

    :param register: the registration callback.
    """


@hookspec
def gridkv_register_authenticators(
    register: Callable[[str, AuthenticatorFactory], None],
) -> None:
    """Register peer authenticators.

    Call ``register(name, factory)``. The built-in ``"none"`` authenticator is what
    ``disable_auth = True`` selects; signed identities arrive with the authentication issue.

    :param register: the registration callback.
    """


@hookspec
def gridkv_register_membership(register: Callable[[str, MembershipFactory], None]) -> None:
    """Register membership protocols (failure detection and dissemination).

    Call ``register(name, factory)``; ``factory(context)``, given a
    :class:`~gridkv.cluster.context.MembershipContext`, returns an unstarted object implementing
    :class:`gridkv.cluster.membership.Membership`. ``membership.protocol = name``
    selects it; the built-in ``"swim"`` (SWIM with Lifeguard) is the default.

    :param register: the registration callback.
    """


@hookspec(firstresult=True)
def gridkv_meter_provider(options: Options) -> Any:
    """The OpenTelemetry ``MeterProvider`` a new node records into, or ``None``.

    Called once per node, when it is built, before anything runs; the first plugin that
    returns a provider wins (gridkv-metrics does when ``metrics.prometheus_addr`` or
    ``metrics.otlp_endpoint`` is set). The node calls the provider's ``shutdown()`` when it
    stops. ``None`` from every plugin: the node records into the global provider.

    :param options: the node's options.
    """


# -- lifecycle: called on the node's event loop -------------------------------------------


@hookspec
def gridkv_node_started(node: NodeHandle) -> None:
    """Called once a node has started (transport listening, storage open).

    An exception is logged and goes no further: the node is started either way.

    :param node: the node; read-only use of its public attributes.
    """


@hookspec
def gridkv_node_stopping(node: NodeHandle) -> None:
    """Called when a node begins to close, before its transport stops.

    An exception is logged and goes no further: the close carries on.

    :param node: the node.
    """


@hookspec
def gridkv_member_changed(node: NodeHandle, member: MemberInfo, old: str | None, new: str) -> None:
    """Called on every change of a member's state in this node's view.

    An exception is logged and goes no further: the change is applied and the other plugins
    hear of it all the same.

    :param node: the node whose view changed.
    :param member: the member, a :class:`gridkv.MemberInfo` (id, address, state,
        incarnation).
    :param old: the previous state, ``None`` for a member seen for the first time.
    :param new: the new state ("alive", "suspect", "dead", "left").
    """
