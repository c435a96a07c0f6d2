"""The plugin manager and the typed facade the rest of GridKV calls.

Nothing outside this module calls ``pm.hook``: node code asks :class:`Plugins` for
``transports()``, ``storage_backends()`` and so on, and calls its lifecycle methods. Plugins are
found through the ``gridkv.plugins`` entry-point group; ``GRIDKV_DISABLE_PLUGINS=name,...``
keeps the named ones from loading, and :meth:`Plugins.check_pending` rejects hook
implementations whose names match no hook (a typo would otherwise be ignored silently).

Lifecycle hooks are isolated: each plugin's implementation is called on its own, and one that
raises is logged (logger ``"gridkv"``, naming the plugin and the hook, with the traceback)
while the others still run and the node carries on. A plugin's bug never breaks a start, a
close or the handling of a membership change.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from gridkv.base.errors import BackendNotInstalled, ConfigError
from gridkv.base.log import LOGGER_NAME
from gridkv.plugins import builtin, hookspecs

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.cluster.membership.base import MemberInfo, MembershipFactory
    from gridkv.plugins.hookspecs import NodeHandle
    from gridkv.security.base import AuthenticatorFactory
    from gridkv.storage.base import StorageFactory
    from gridkv.transport.base import TransportFactory

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_ENV",
    "LIFECYCLE_HOOKS",
    "Plugins",
    "get_plugins",
    "distribution_for",
]

ENTRY_POINT_GROUP = "gridkv.plugins"
DISABLE_ENV = "GRIDKV_DISABLE_PLUGINS"
BUILTIN_NAME = "gridkv.builtin"
#: Hooks called on a running node, one plugin at a time (see :meth:`Plugins._notify`).
LIFECYCLE_HOOKS = ("gridkv_node_started", "gridkv_node_stopping", "gridkv_member_changed")

log = logging.getLogger(LOGGER_NAME)

_F = TypeVar("_F")


def distribution_for(kind: str, name: str) -> str:
    """The distribution that provides backend ``name`` of ``kind`` by GridKV's naming rule."""
    return f"gridkv-{kind}-{name}"


class Plugins:
    """A plugin manager with GridKV's hooks, and typed access to what plugins registered.

    :param load_entry_points: discover installed plugins (tests may pass ``False``).
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        for name in _disabled():
            self.pm.set_blocked(name)
        self.pm.register(builtin, name=BUILTIN_NAME)
        if load_entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        self.check_pending()
        self._cache: dict[str, dict[str, Any]] = {}

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object or module (tests and embedders); returns its name.

        :raises ConfigError: the name is blocked or taken, or the plugin implements a hook
            GridKV does not have or wraps a lifecycle hook; such a plugin is not kept.
        """
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise ConfigError(f"plugin {name or plugin!r} is blocked or already registered")
        try:
            self.check_pending()
        except ConfigError:
            self.pm.unregister(name=registered)
            raise
        self._cache.clear()
        return registered

    def unregister(self, name: str) -> None:
        """Remove the plugin registered under ``name``."""
        self.pm.unregister(name=name)
        self._cache.clear()

    def check_pending(self) -> None:
        """Raise when a plugin implements a hook GridKV does not have, or wraps a lifecycle hook.

        A misspelt hook name would otherwise be ignored silently; lifecycle hooks are called
        one plugin at a time (:meth:`_notify`), so there is nothing for a wrapper to wrap.

        :raises ConfigError: naming the plugin and the hook.
        """
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f"plugin error: {exc}") from None
        for hook in LIFECYCLE_HOOKS:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.wrapper or impl.hookwrapper:
                    raise ConfigError(
                        f"plugin {impl.plugin_name!r}: {hook} cannot be a wrapper; lifecycle "
                        "hooks are called one plugin at a time"
                    )

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins (blocked names are not plugins)."""
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)

    def _collect(self, hook: str) -> dict[str, Any]:
        cached = self._cache.get(hook)
        if cached is not None:
            return cached
        found: dict[str, Any] = {}

        def register(name: str, factory: Any) -> None:
            if not isinstance(name, str) or not name:
                raise ConfigError(
                    f"{hook}: a backend name must be a non-empty string, got {name!r}"
                )
            if name in found:
                raise ConfigError(f"{hook}: two plugins register the name {name!r}")
            if not callable(factory):
                raise ConfigError(f"{hook}: factory for {name!r} is not callable")
            found[name] = factory

        getattr(self.pm.hook, hook)(register=register)
        self._cache[hook] = found
        return found

    def transports(self) -> Mapping[str, TransportFactory]:
        """Transport factories by name."""
        return self._collect("gridkv_register_transports")

    def storage_backends(self) -> Mapping[str, StorageFactory]:
        """Storage factories by name."""
        return self._collect("gridkv_register_storage")

    def authenticators(self) -> Mapping[str, AuthenticatorFactory]:
        """Authenticator factories by name."""
        return self._collect("gridkv_register_authenticators")

    def membership(self) -> Mapping[str, MembershipFactory]:
        """Membership protocol factories by name."""
        return self._collect("gridkv_register_membership")

    def transport(self, name: str) -> TransportFactory:
        """The factory of transport ``name``.

        :raises BackendNotInstalled: naming the distribution to install.
        """
        return _pick(self.transports(), "transport", name, "network.type")

    def storage(self, name: str) -> StorageFactory:
        """The factory of storage backend ``name``.

        :raises BackendNotInstalled: naming the distribution to install.
        """
        return _pick(self.storage_backends(), "storage", name, "storage.backend")

    def authenticator(self, name: str) -> AuthenticatorFactory:
        """The factory of authenticator ``name``.

        :raises BackendNotInstalled: naming the distribution to install.
        """
        return _pick(self.authenticators(), "auth", name, "auth")

    def membership_protocol(self, name: str) -> MembershipFactory:
        """The factory of membership protocol ``name``.

        :raises BackendNotInstalled: naming the distribution to install.
        """
        return _pick(self.membership(), "membership", name, "membership.protocol")

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Call each plugin's implementation of lifecycle ``hook`` on its own.

        Implementations run in pluggy's order (``tryfirst`` first, then the latest
        registered). One that raises is logged once, with its traceback, naming the plugin
        and the hook; the others still run, and nothing is raised to the caller.
        """
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception:
                log.exception(
                    "plugin %r raised in %s; the node and the other plugins carry on",
                    impl.plugin_name,
                    hook,
                    extra={"plugin": impl.plugin_name, "hook": hook},
                )

    def meter_provider(self, options: Options) -> Any:
        """The meter provider a plugin makes for a node with ``options``, or ``None``.

        :raises ConfigError: the options ask for a metrics exporter and no plugin gives one
            (gridkv-metrics is not installed); or the plugin's own error for its options.
        """
        hook = self.pm.hook.gridkv_meter_provider
        provider = hook(options=options)
        # A plugin may answer None on purpose (gridkv-metrics does when the application set
        # up its own SDK); only no plugin at all leaves an exporter asked for unserved.
        if provider is None and options.metrics.exported and not hook.get_hookimpls():
            key = "prometheus_addr" if options.metrics.prometheus_addr else "otlp_endpoint"
            raise ConfigError(
                f"config key 'metrics.{key}': exporting metrics needs the gridkv-metrics "
                "distribution: pip install gridkv-metrics"
            )
        return provider

    def node_started(self, node: NodeHandle) -> None:
        """Tell plugins a node has started; a plugin that raises is logged and skipped."""
        self._notify("gridkv_node_started", node=node)

    def node_stopping(self, node: NodeHandle) -> None:
        """Tell plugins a node is closing; a plugin that raises is logged and skipped."""
        self._notify("gridkv_node_stopping", node=node)

    def member_changed(
        self, node: NodeHandle, member: MemberInfo, old: str | None, new: str
    ) -> None:
        """Tell plugins a member changed state; a plugin that raises is logged and skipped."""
        self._notify("gridkv_member_changed", node=node, member=member, old=old, new=new)


def _pick(found: Mapping[str, _F], kind: str, name: str, key: str) -> _F:
    factory = found.get(name)
    if factory is None:
        have = ", ".join(sorted(found)) or "none"
        disabled = ", ".join(_disabled())
        raise BackendNotInstalled(
            f"{kind} {name!r} is not installed: pip install {distribution_for(kind, name)}"
            + (f" (plugins disabled by {DISABLE_ENV}: {disabled})" if disabled else "")
            + f"; installed {kind} backends: {have} (config key {key!r})"
        )
    return factory


def _disabled() -> list[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


_default: Plugins | None = None
_default_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide plugin manager, created and loaded on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Plugins()
        return _default
