"""A Django cache backend on GridKV: :class:`GridKVCache`.

In ``settings.py``::

    CACHES = {
        "default": {
            "BACKEND": "gridkv.contrib.django.GridKVCache",
            # GridKV configuration keys, as gridkv.GridKV(**config) takes them:
            "OPTIONS": {
                "local_address": "10.0.0.5:7946",
                "seed_addrs": ["10.0.0.6:7946", "10.0.0.7:7946"],
                "auth": {"cluster_secret_file": "/etc/gridkv/secret"},
            },
            # or a configuration file (OPTIONS, when given too, go on top of it):
            # "LOCATION": "/etc/gridkv/node.yaml",
            "TIMEOUT": 300,  # Django's own keys: TIMEOUT, KEY_PREFIX, VERSION, KEY_FUNCTION
        }
    }

Two keys of ``OPTIONS`` are the backend's own, in upper case as Django's are:
``READY_TIMEOUT`` (seconds the first use waits for the node to join its cluster, default
:data:`READY_TIMEOUT`) and ``PICKLE_PROTOCOL`` (default :data:`pickle.HIGHEST_PROTOCOL`).

The node. Django makes a backend object per thread (and per async context) and alias; the
GridKV node behind them is one per process and configuration. It is made on first use, under
a lock, and shared by every backend object whose configuration is the same (two aliases with
the same ``OPTIONS`` share one node, as they must: a node owns its address). A forked child
(gunicorn ``--preload``, ``multiprocessing``) makes a node of its own on its first use; the
parent's is left to the parent. At interpreter exit GridKV closes every node still open
(:mod:`gridkv.api.process`); :func:`close_nodes` closes them earlier. ``close()``, which Django
calls at the end of every request, does nothing.

Semantics, as Django's built-in backends have them (``docs/django.md`` has the full table):
``timeout=None`` keeps a key forever, 0 or less does not store it (and removes the one
there), the default is ``TIMEOUT``; values are pickled, except plain ints within 64 bits,
which are stored as their decimal ASCII (as Django's Redis backend does) so that ``incr`` and
``decr`` run atomically on the key's owner with GridKV's counters. ``incr`` of a missing key
raises :class:`~gridkv.OperationRefused`, a :class:`ValueError`. Every other error is GridKV's
own (:class:`~gridkv.GridKVError`), raised as it is.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pickle
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from gridkv.api.base import MAX_TTL_SECONDS
from gridkv.api.blocking import GridKV
from gridkv.base.config import load_config, merged
from gridkv.base.errors import (
    BulkOperationError,
    ConfigError,
    InvalidArgument,
    OperationRefused,
)
from gridkv.base.options import Options

__all__ = ["GridKVCache", "READY_TIMEOUT", "close_nodes"]

#: Seconds the first use of a cache waits for its new node to join the cluster, unless
#: ``OPTIONS["READY_TIMEOUT"]`` says otherwise. A node that has not joined by then raises
#: :class:`~gridkv.NotReady` from every call until it has (it keeps trying its seeds).
READY_TIMEOUT: Final = 10.0

#: The backend's own keys of ``OPTIONS``; every other key is a GridKV configuration key.
_BACKEND_KEYS: Final = ("READY_TIMEOUT", "PICKLE_PROTOCOL")
#: Django's culling keys of ``OPTIONS``, which only its local backends honour.
_CULL_KEYS: Final = ("MAX_ENTRIES", "CULL_FREQUENCY")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
#: The first bytes of a counter (an int stored as decimal ASCII); no pickle starts with one.
_COUNTER_HEADS: Final = frozenset(b"-0123456789")
#: Parsed configurations kept at most (backend objects are made per thread and per async
#: context, so each parses its configuration once only while the cache holds it).
_PARSED_MAX: Final = 256


@dataclass(frozen=True, slots=True)
class _Config:
    """A cache's configuration, checked: the node's configuration keys and the backend's own."""

    #: The node's configuration keys (the file's, with OPTIONS on top), already checked.
    mapping: dict[str, Any]
    #: The options as canonical JSON: which node of the process serves this configuration.
    node_key: str
    ready_timeout: float
    pickle_protocol: int

    def options(self) -> Options:
        """The node's options, built by the process that makes the node.

        Not kept from the check: a default ``local_node_id`` names the process that builds
        the options, and the check may run in a parent that forks its workers afterwards.
        """
        return Options.from_mapping(self.mapping)


@dataclass(slots=True)
class _Slot:
    """One configuration's node in this process, made under ``lock`` on first use."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    kv: GridKV | None = None
    #: Set (under ``lock``) by :func:`close_nodes`, which took the slot out of the registry: a
    #: caller that found the slot before makes no node in it, and looks again.
    closed: bool = False


@dataclass(slots=True)
class _Registry:
    """This process's nodes, by configuration; replaced whole in a forked child."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    slots: dict[str, _Slot] = field(default_factory=dict)
    #: Bumped when the nodes are forgotten (a fork, :func:`close_nodes`): a backend object
    #: whose node is of an older generation looks its node up again.
    generation: int = 0


_registry = _Registry()
_parsed: dict[str, _Config] = {}


def _forget_after_fork() -> None:
    """``os.register_at_fork(after_in_child=...)``: the child makes nodes of its own.

    The parent's nodes refuse every call in the child (see :class:`~gridkv.GridKV`); the
    registry, whose lock another thread of the parent may have held at the fork, is replaced
    rather than taken.
    """
    global _registry
    _registry = _Registry(generation=_registry.generation + 1)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)


def close_nodes(timeout: float = 30.0) -> None:
    """Close every node this process's GridKV caches made, gracefully; the next use makes new ones.

    For tests and shutdown hooks (a gunicorn ``worker_exit``): at interpreter exit GridKV
    closes the nodes still open by itself. ``timeout`` is each node's, as
    :meth:`GridKV.close <gridkv.GridKV.close>` takes it.

    :raises InvalidArgument: ``timeout`` is not a number of seconds.
    """
    registry = _registry
    with registry.lock:
        slots = list(registry.slots.values())
        registry.slots.clear()
        registry.generation += 1
    for slot in slots:
        with slot.lock:  # a node being made is closed once it is
            slot.closed = True
            kv, slot.kv = slot.kv, None
        if kv is not None:
            kv.close(timeout)


def _node_for(config: _Config) -> tuple[GridKV, int]:
    """This process's node for ``config``, and the registry's generation it belongs to.

    The node is made, started and waited for on first use. A slot that :func:`close_nodes`
    closed between the look-up and its lock is left alone (a node made in it would be in no
    registry, never closed, and hold its address): the look-up is done again, in the
    registry of the moment.

    :raises ConfigError, PeerUnavailable: the node could not be made (nothing is kept; the
        next call tries again).
    :raises NotReady: the new node did not join within ``READY_TIMEOUT``; it is kept, and
        keeps trying its seeds.
    """
    while True:
        registry = _registry
        with registry.lock:
            slot = registry.slots.get(config.node_key)
            if slot is None:
                slot = registry.slots[config.node_key] = _Slot()
            generation = registry.generation
        with slot.lock:
            if slot.closed:
                continue
            if slot.kv is None:
                slot.kv = GridKV(config.options())
                slot.kv.wait_ready(config.ready_timeout)
            return slot.kv, generation


def _parse(location: object, raw: object) -> _Config:
    """The configuration of a cache: its ``LOCATION`` file with its ``OPTIONS`` on top.

    :raises ConfigError: a key is unknown or a value is bad; the message names it.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "GridKVCache OPTIONS must be a mapping of GridKV configuration keys, got "
            f"{type(raw).__name__}"
        )
    config: dict[str, Any] = {}
    ready_timeout = READY_TIMEOUT
    protocol = pickle.HIGHEST_PROTOCOL
    for name, value in raw.items():
        if name == "READY_TIMEOUT":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < math.inf
            ):
                raise ConfigError(
                    f"GridKVCache OPTIONS['READY_TIMEOUT'] must be seconds, 0 or more; got "
                    f"{value!r:.60}"
                )
            ready_timeout = float(value)
        elif name == "PICKLE_PROTOCOL":
            if type(value) is not int or not 0 <= value <= pickle.HIGHEST_PROTOCOL:
                raise ConfigError(
                    "GridKVCache OPTIONS['PICKLE_PROTOCOL'] must be an int from 0 to "
                    f"{pickle.HIGHEST_PROTOCOL}; got {value!r:.60}"
                )
            protocol = value
        elif name in _CULL_KEYS:
            raise ConfigError(
                f"GridKVCache OPTIONS[{name!r}]: GridKV does not cull by entry count; bound "
                "its memory with storage.max_memory_mb and evict with storage.eviction = "
                "'lru' (OPTIONS {'storage': {...}})"
            )
        elif isinstance(name, str) and name.isupper():
            raise ConfigError(
                f"GridKVCache OPTIONS[{name!r}] is not an option of the backend (those are "
                f"{', '.join(_BACKEND_KEYS)}); GridKV's configuration keys are lower case, "
                "e.g. local_node_id (see docs/configuration.md)"
            )
        else:
            config[name] = value
    if location:
        if not isinstance(location, str | os.PathLike):
            raise ConfigError(
                "GridKVCache LOCATION must be the path of a GridKV configuration file, got "
                f"{type(location).__name__}"
            )
        base = load_config(Path(location).expanduser()).to_dict()
        if base["local_node_id"] == Options().local_node_id:
            base["local_node_id"] = ""  # the file has none: load_config gave this process's
        mapping = merged(base, config)
    else:
        mapping = config
    canonical = Options.from_mapping(mapping).to_dict()  # checked now, when Django makes it
    canonical["local_node_id"] = mapping.get("local_node_id", "")
    node_key = json.dumps(canonical, sort_keys=True, default=repr)
    return _Config(mapping, node_key, ready_timeout, protocol)


def _config_of(location: object, raw: object) -> _Config:
    """:func:`_parse`, once per distinct configuration while :data:`_parsed` holds it."""
    try:
        fingerprint = json.dumps([str(location), raw], sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys that do not sort: parsed every time
        return _parse(location, raw)
    config = _parsed.get(fingerprint)
    if config is None:
        config = _parse(location, raw)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[fingerprint] = config
    return config


def _loads(data: bytes) -> Any:
    """A value as :meth:`GridKVCache._dumps` stored it: a counter's int, or unpickled."""
    if data[:1] and data[0] in _COUNTER_HEADS:
        try:
            return int(data)
        except ValueError:
            pass
    return pickle.loads(data)


class GridKVCache(BaseCache):  # type: ignore[misc]  # Django is untyped
    """Django's cache API on a GridKV cluster; ``BACKEND: "gridkv.contrib.django.GridKVCache"``.

    :param location: ``LOCATION``: the path of a GridKV configuration file, or empty.
    :param params: the rest of the alias's settings: ``OPTIONS`` (GridKV configuration keys,
        plus ``READY_TIMEOUT`` and ``PICKLE_PROTOCOL``), ``TIMEOUT``, ``KEY_PREFIX``,
        ``VERSION``, ``KEY_FUNCTION``.
    :raises ConfigError: the configuration is bad (checked here, when Django first makes the
        backend, not at the first call).
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        self._config = _config_of(location, params.get("OPTIONS"))  # checked before Django reads it
        super().__init__(params)
        self._kv: GridKV | None = None
        self._generation = -1

    # -- the node ----------------------------------------------------------------------------

    @property
    def kv(self) -> GridKV:
        """This process's GridKV node behind the cache (made on first use), for its stats."""
        return self._client()

    def _client(self) -> GridKV:
        kv = self._kv
        if kv is None or self._generation != _registry.generation:
            kv, self._generation = _node_for(self._config)
            self._kv = kv
        return kv

    # -- values and time-outs ----------------------------------------------------------------

    def _dumps(self, value: Any) -> bytes:
        """``value`` as stored: a plain int within 64 bits as decimal ASCII, else pickled.

        ``type(...) is int`` leaves out bools and other subclasses, which are pickled.
        """
        if type(value) is int and _INT_MIN <= value <= _INT_MAX:
            return b"%d" % value
        return pickle.dumps(value, self._config.pickle_protocol)

    def _ttl(self, timeout: Any) -> float | None:
        """Django's ``timeout`` as GridKV's ``ttl`` (0: never), or ``None``: do not store.

        :raises InvalidArgument: ``timeout`` is not a number of seconds or ``None``.
        """
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return 0.0
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise InvalidArgument(
                f"cache timeout must be seconds or None, got {type(timeout).__name__} "
                f"{timeout!r:.60}"
            )
        try:
            seconds = float(timeout)
        except OverflowError:  # an int (or a fraction) too large for a float, either sign
            seconds = -math.inf if timeout < 0 else math.inf
        if math.isnan(seconds):
            raise InvalidArgument("cache timeout must be seconds or None, got NaN")
        if seconds <= 0:
            return None
        if seconds > MAX_TTL_SECONDS:  # longer than GridKV's longest (100 years): forever
            return 0.0
        return seconds

    def _delete(self, kv: GridKV, key: str) -> bool:
        """Delete ``key`` (made); whether it had a value just before."""
        existed = kv.exists(key)
        kv.delete(key)
        return existed

    # -- Django's cache API ------------------------------------------------------------------

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` has none; whether it did (atomic on the owner).

        With a ``timeout`` of 0 or less nothing is stored, and the answer is whether it
        would have been.
        """
        key = self.make_and_validate_key(key, version=version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        kv = self._client()
        if ttl is None:
            return not kv.exists(key)
        return kv.add(key, data, ttl=ttl)

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``, or ``default`` when it has none."""
        key = self.make_and_validate_key(key, version=version)
        data = self._client().get(key)
        return default if data is None else _loads(data)

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store ``value`` under ``key``; a ``timeout`` of 0 or less deletes the key instead."""
        key = self.make_and_validate_key(key, version=version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        kv = self._client()
        if ttl is None:
            kv.delete(key)
        else:
            kv.set(key, data, ttl=ttl)

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new timeout; whether it exists (0 or less deletes it)."""
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        kv = self._client()
        if ttl is None:
            return self._delete(kv, key)
        return kv.touch(key, ttl=ttl)

    def delete(self, key: str, version: int | None = None) -> bool:
        """Delete ``key``; whether it had a value.

        The answer is read just before the delete: two deletes of one key at once may both
        answer ``True``.
        """
        key = self.make_and_validate_key(key, version=version)
        return self._delete(self._client(), key)

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        """The values of the ``keys`` that have one, by key; one request per owner node.

        :raises BulkOperationError: some keys could not be read (its ``values`` holds the
            raw values that were).
        """
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not made:
            return {}
        found = self._client().get_many(list(made))
        return {made[key]: _loads(found[key]) for key in made if key in found}

    def set_many(
        self,
        data: Mapping[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[str]:
        """Store every value of ``data``; the keys that failed (their writes were not acked).

        A bad key or value (too large) raises before anything is written.
        """
        if not data:
            return []
        made: dict[str, str] = {}
        values: dict[str, bytes] = {}
        for key, value in data.items():
            full = self.make_and_validate_key(key, version=version)
            made[full] = key
            values[full] = self._dumps(value)
        ttl = self._ttl(timeout)
        kv = self._client()
        # A timeout of 0 or less stores nothing, and removes what was there.
        failed = kv.delete_many(list(values)) if ttl is None else kv.set_many(values, ttl=ttl)
        return [made[key] for key in failed]

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        """Delete every key of ``keys``.

        :raises BulkOperationError: some deletes were not acknowledged (its ``errors`` says
            why, by key); the others were done.
        """
        made = [self.make_and_validate_key(key, version=version) for key in keys]
        if not made:
            return
        failed = self._client().delete_many(made)
        if failed:
            key, first = next(iter(failed.items()))
            raise BulkOperationError(
                f"delete_many: {len(failed)} key(s) were not deleted, the first {key!r:.60}: "
                f"{type(first).__name__}: {first}",
                {},
                failed,
            )

    def has_key(self, key: str, version: int | None = None) -> bool:
        """Whether ``key`` has a value."""
        key = self.make_and_validate_key(key, version=version)
        return self._client().exists(key)

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` to the int under ``key``, atomically on its owner; the new value.

        The key keeps its timeout. As in Django's Redis backend, the check that the key
        exists comes just before the increment: a key that expires or is deleted in between
        is made again, holding ``delta``, without a timeout.

        :raises OperationRefused: (a ``ValueError``) the key is missing, its value is not an
            int within 64 bits, or the result would leave 64 bits.
        :raises InvalidArgument: ``delta`` is not an int within 64 bits.
        """
        key = self.make_and_validate_key(key, version=version)
        kv = self._client()
        if not kv.exists(key):
            raise OperationRefused(
                f"incr/decr of key {key!r:.60}: the key is not in the cache (Django's incr and "
                "decr do not make keys; add() it first)"
            )
        return kv.incr(key, delta)

    def clear(self) -> None:
        """Delete every key of the cluster: those of every alias, prefix and version.

        :raises PeerUnavailable: a node did not answer.
        """
        self._client().clear()

    def close(self, **kwargs: Any) -> None:
        """Nothing: Django calls it after every request, and the node lives per process."""

    # -- the async API: the blocking calls in a thread pool ------------------------------------
    # A GridKV node may be called from any thread, so the calls do not queue for Django's one
    # thread-sensitive thread (thread_sensitive=False), as BaseCache's defaults would.

    async def aadd(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """:meth:`add`, from a thread of the pool."""
        return await sync_to_async(self.add, thread_sensitive=False)(key, value, timeout, version)

    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        """:meth:`get`, from a thread of the pool."""
        return await sync_to_async(self.get, thread_sensitive=False)(key, default, version)

    async def aset(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """:meth:`set`, from a thread of the pool."""
        await sync_to_async(self.set, thread_sensitive=False)(key, value, timeout, version)

    async def atouch(
        self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """:meth:`touch`, from a thread of the pool."""
        return await sync_to_async(self.touch, thread_sensitive=False)(key, timeout, version)

    async def adelete(self, key: str, version: int | None = None) -> bool:
        """:meth:`delete`, from a thread of the pool."""
        return await sync_to_async(self.delete, thread_sensitive=False)(key, version)

    async def aget_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        """:meth:`get_many`, from a thread of the pool."""
        return await sync_to_async(self.get_many, thread_sensitive=False)(keys, version)

    async def aset_many(
        self,
        data: Mapping[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[str]:
        """:meth:`set_many`, from a thread of the pool."""
        return await sync_to_async(self.set_many, thread_sensitive=False)(data, timeout, version)

    async def adelete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        """:meth:`delete_many`, from a thread of the pool."""
        await sync_to_async(self.delete_many, thread_sensitive=False)(keys, version)

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        """:meth:`has_key`, from a thread of the pool."""
        return await sync_to_async(self.has_key, thread_sensitive=False)(key, version)

    async def aincr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """:meth:`incr`, from a thread of the pool."""
        return await sync_to_async(self.incr, thread_sensitive=False)(key, delta, version)

    async def aclear(self) -> None:
        """:meth:`clear`, from a thread of the pool."""
        await sync_to_async(self.clear, thread_sensitive=False)()

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing, as :meth:`close`."""
