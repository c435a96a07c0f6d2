"""gridkv.contrib.django.GridKVCache against Django's own cache backend tests.

The first part is Django's ``tests/cache/tests.py::BaseCacheTests`` adapted, with Django's
test names, as pytest functions (plain ``assert``, ``pytest.raises``/``warns``; a subTest's
loop is a plain loop). The cache is a cluster of two nodes on the memory transport, with a
cluster secret: alias ``default`` (with ``prefix``, ``v2``, ``custom_key``, ``custom_key2``,
``never`` and ``far``, which share its node as they share its configuration) on node
``django-a``, and alias ``peer`` on node ``django-b``; ``replica_count`` is 1, so about half
the keys the tests use live on the other node, and the remote paths (reads, writes, atomic
operations, bulk calls, ``clear``) are tested along with the local ones. Django's
``setUp``/``tearDown`` are the fixtures ``cluster`` (the settings and the nodes, once) and
``cleared`` (``cache.clear()`` after each test). Adaptations:

- Waits for expiry use short timeouts (50 ms where the test only waits for the expiry,
  ``SHORT``, 1 s, where calls must find the key first) and ``wait_for`` with a deadline,
  never a fixed sleep. Where Django sleeps to show that a key did *not* expire, a "canary"
  key set just after it, with the same timeout, is waited for instead: once the canary is
  gone, the key's old timeout has passed. (``test_expiration`` sets the key it waits for
  last, so the others have expired when it has.)
- ``incr_decr_type_error`` is :class:`gridkv.OperationRefused` (as the Redis tests use
  redis's ``ResponseError``): ``incr`` of a pickled value is refused by GridKV's counters.
  ``pytest.raises(ValueError)`` for a missing key matches the message too (ruff's PT011).
- ``test_set_many_returns_failing_keys``, ``test_default_never_expiring_timeout`` and
  ``test_default_far_future_timeout`` come from Django's memcached tests, and apply here.

Left out, and why:

- ``test_cache_read_for_model_instance``, ``test_cache_write_for_model_instance_with_deferred``
  and ``test_cache_read_for_model_instance_with_deferred``: they need a database and Django's
  test models; what they test (that pickling a model instance does not evaluate its fields'
  defaults) is Django's pickling, which this backend uses unchanged.
- ``test_cull``, ``test_zero_cull``, ``test_cull_delete_when_store_empty``: GridKV does not
  cull by entry count (its memory is bounded by ``storage.max_memory_mb``, with ``lru``
  eviction); Django leaves them out for its Redis and memcached backends too. The backend
  refuses ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` instead (``test_cull_options_are_refused``).
- ``test_memcached_deletes_key_on_failed_set``: memcached's ``set`` fails silently on a large
  value, so its backend deletes the old value; GridKV's raises ``ValueTooLarge`` instead
  (``test_gridkv_errors_surface_as_themselves``).
- The tests of other backends' internals (connection pools, table creation, files, LocMem's
  LRU, memcached's server lists) and of Django's cache middleware and utilities, which do
  not depend on the backend.

The second part tests what is the backend's own: the node per process and
configuration (threads, aliases, a fork), two aliases on two nodes seeing each other's
writes, the configuration (``OPTIONS``, ``LOCATION``, the backend's keys, bad values), the
timeout mapping, the counter format, GridKV's errors, the async API, and the example app.

``test_a_set_right_after_an_add_of_a_remote_key_is_kept`` is the regression test of a GridKV
bug these tests found: an atomic operation that ran on another node (the key's primary owner)
did not advance the caller's clock, so a plain ``set`` from the caller in the same
millisecond was ordered before the operation's write, and lost.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import django
import pytest
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, CacheKeyWarning, cache, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.http import HttpResponse
from django.middleware.cache import FetchFromCacheMiddleware, UpdateCacheMiddleware
from django.test import RequestFactory, override_settings
from gridkv import (
    BulkOperationError,
    ConfigError,
    GridKV,
    GridKVError,
    InvalidArgument,
    KeyTooLarge,
    NotReady,
    OperationRefused,
    PeerUnavailable,
    ShuttingDown,
    ValueTooLarge,
)
from gridkv.contrib import django as backend_module
from gridkv.contrib.django import READY_TIMEOUT, GridKVCache, close_nodes
from gridkv.testing.forking import in_forked_child
from gridkv.testing.waiting import wait_for
from gridkv.transport import MemoryNetwork

ROOT = Path(__file__).resolve().parents[2]
BACKEND = "gridkv.contrib.django.GridKVCache"
#: The cluster's secret (as `gridkv keys new` prints one); a fixed one, for the tests only.
SECRET = base64.b64encode(bytes(range(32))).decode()


#: The process's memory network, for a node alone in its process.
MEMORY = {"network": {"type": "memory"}}


def node_options(name: str, *seeds: str, **more: Any) -> dict[str, Any]:
    """GridKV configuration of node ``django-<name>`` on the process's memory network."""
    return {
        "local_node_id": f"django-{name}",
        "local_address": f"django-{name}:1",
        "seed_addrs": list(seeds),
        "replica_count": 1,
        "network": {"type": "memory"},
        "auth": {"cluster_secret": SECRET},
        **more,
    }


# functions/classes for complex data type tests
def f() -> int:
    return 42


class C:
    def m(self) -> int:
        return 24


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError()


def empty_response(request: Any) -> HttpResponse:
    return HttpResponse()


KEY_ERRORS_WITH_MEMCACHED_MSG = (
    "Cache key contains characters that will cause errors if used with memcached: %r"
)


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    "A customized cache key function"
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def caches_setting(**params: Any) -> dict[str, dict[str, Any]]:
    """Django's ``caches_setting_for_tests`` for GridKV, with the ``peer`` alias."""
    base = {"BACKEND": BACKEND, "OPTIONS": node_options("a"), **params}
    return {
        "default": dict(base),
        "prefix": {**base, "KEY_PREFIX": f"cacheprefix{os.getpid()}"},
        "v2": {**base, "VERSION": 2},
        "custom_key": {**base, "KEY_FUNCTION": custom_key_func},
        "custom_key2": {**base, "KEY_FUNCTION": f"{__name__}.custom_key_func"},
        "never": {**base, "TIMEOUT": None},  # memcached's #22845 tests
        "far": {**base, "TIMEOUT": 31536000},  # 60*60*24*365, 1 year
        "peer": {"BACKEND": BACKEND, "OPTIONS": node_options("b", "django-a:1")},
    }


CACHES = caches_setting()

if not settings.configured:
    settings.configure(
        CACHES=CACHES,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        USE_I18N=False,
        USE_TZ=True,
        SECRET_KEY="gridkv-tests-only",
    )
    django.setup()


#: A timeout that runs out within the test, yet leaves the next calls time to find the key
#: there (a machine busy with other work may pause a test for a good fraction of a second).
SHORT = 1.0
#: Django's tests take it from the backend; GridKV's counters refuse a value not an int.
INCR_DECR_TYPE_ERROR = OperationRefused
FACTORY = RequestFactory()


def start_cluster() -> None:
    """Make both nodes (each backend's first use does) and wait until each sees the other."""
    a, b = caches["default"].kv, caches["peer"].kv
    wait_for(
        "django-a and django-b see each other",
        lambda: a.stats().cluster.healthy_nodes == 2 and b.stats().cluster.healthy_nodes == 2,
    )


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    """The settings of these tests, and the two nodes of the cluster, for the whole module."""
    with override_settings(CACHES=CACHES, ALLOWED_HOSTS=["testserver"]):
        start_cluster()
        yield
    close_nodes(timeout=5)


@pytest.fixture(autouse=True)
def cleared() -> Iterator[None]:
    """Each test starts where the previous left the cluster: cleared (Django's tearDown)."""
    yield
    cache.clear()


def expired(key: str, alias: str = DEFAULT_CACHE_ALIAS) -> Callable[[], bool]:
    return lambda: not caches[alias].has_key(key)


# -- Django's BaseCacheTests -------------------------------------------------------------------


def test_simple() -> None:
    # Simple cache set/get works
    cache.set("key", "value")
    assert cache.get("key") == "value"


def test_default_used_when_none_is_set() -> None:
    """If None is cached, get() returns it instead of the default."""
    cache.set("key_default_none", None)
    assert cache.get("key_default_none", default="default") is None


def test_add() -> None:
    # A key can be added to a cache
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_prefix() -> None:
    # Test for same cache key conflicts between shared backend
    cache.set("somekey", "value")

    # should not be set in the prefixed cache
    assert caches["prefix"].has_key("somekey") is False

    caches["prefix"].set("somekey", "value2")

    assert cache.get("somekey") == "value"
    assert caches["prefix"].get("somekey") == "value2"


def test_non_existent() -> None:
    """Nonexistent cache keys return as None/default."""
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "bang!") == "bang!"


def test_get_many() -> None:
    # Multiple cache keys can be returned using get_many
    cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    cache.set_many({"x": None, "y": 1})
    assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}


def test_delete() -> None:
    # Cache keys can be deleted
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.get("key1") == "spam"
    assert cache.delete("key1") is True
    assert cache.get("key1") is None
    assert cache.get("key2") == "eggs"


def test_delete_nonexistent() -> None:
    assert cache.delete("nonexistent_key") is False


def test_has_key() -> None:
    # The cache can be inspected for cache keys
    cache.set("hello1", "goodbye1")
    assert cache.has_key("hello1") is True
    assert cache.has_key("goodbye1") is False
    cache.set("no_expiry", "here", None)
    assert cache.has_key("no_expiry") is True
    cache.set("null", None)
    assert cache.has_key("null") is True


def test_in() -> None:
    # The in operator can be used to inspect cache contents
    cache.set("hello2", "goodbye2")
    assert "hello2" in cache
    assert "goodbye2" not in cache
    cache.set("null", None)
    assert "null" in cache


def test_incr() -> None:
    # Cache values can be incremented
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.get("answer") == 52
    assert cache.incr("answer", -10) == 42
    with pytest.raises(ValueError, match="not in the cache"):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError, match="not in the cache"):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(INCR_DECR_TYPE_ERROR):
        cache.incr("null")


def test_decr() -> None:
    # Cache values can be decremented
    cache.set("answer", 43)
    assert cache.decr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.decr("answer", 10) == 32
    assert cache.get("answer") == 32
    assert cache.decr("answer", -10) == 42
    with pytest.raises(ValueError, match="not in the cache"):
        cache.decr("does_not_exist")
    with pytest.raises(ValueError, match="not in the cache"):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(INCR_DECR_TYPE_ERROR):
        cache.decr("null")


def test_close() -> None:
    assert hasattr(cache, "close")
    cache.close()


def test_data_types() -> None:
    # Many different data types can be cached
    tests = {
        "string": "this is a string",
        "int": 42,
        "bool": True,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "function": f,
        "class": C,
    }
    for key, value in tests.items():
        cache.set(key, value)
        assert cache.get(key) == value


def test_expiration() -> None:
    # Cache values can be set to expire. (Django sets three keys for 1 s and sleeps 2 s;
    # here expire1 is set last, so once it is gone the other two have expired too.)
    cache.set("expire2", "very quickly", 0.05)
    cache.set("expire3", "very quickly", 0.05)
    cache.set("expire1", "very quickly", 0.05)

    wait_for("expire1 expires", lambda: cache.get("expire1") is None)
    assert cache.get("expire1") is None

    assert cache.add("expire2", "newvalue") is True
    assert cache.get("expire2") == "newvalue"
    assert cache.has_key("expire3") is False


def test_touch() -> None:
    # cache.touch() updates the timeout.
    cache.set("expire1", "very quickly", timeout=SHORT)
    cache.set("canary", "x", timeout=SHORT)  # gone: expire1's first timeout has passed
    assert cache.touch("expire1", timeout=60) is True
    wait_for("the canary expires", expired("canary"))
    assert cache.has_key("expire1") is True
    assert cache.touch("expire1", timeout=0.05) is True
    wait_for("expire1 expires after its new timeout", expired("expire1"))
    assert cache.has_key("expire1") is False
    # cache.touch() works without the timeout argument.
    cache.set("expire1", "very quickly", timeout=SHORT)
    cache.set("canary", "x", timeout=SHORT)
    assert cache.touch("expire1") is True
    wait_for("the canary expires", expired("canary"))
    assert cache.has_key("expire1") is True

    assert cache.touch("nonexistent") is False


def test_unicode() -> None:
    # Unicode values can be cached
    stuff = {
        "ascii": "ascii_value",
        "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "ascii2": {"x": 1},
    }
    # Test `set`
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value

    # Test `add`
    for key, value in stuff.items():
        assert cache.delete(key) is True
        assert cache.add(key, value) is True
        assert cache.get(key) == value

    # Test `set_many`
    for key in stuff:
        assert cache.delete(key) is True
    cache.set_many(stuff)
    for key, value in stuff.items():
        assert cache.get(key) == value


def test_binary_string() -> None:
    # Binary strings should be cacheable
    from zlib import compress, decompress

    value = "value_to_be_compressed"
    compressed_value = compress(value.encode())

    # Test set
    cache.set("binary1", compressed_value)
    compressed_result = cache.get("binary1")
    assert compressed_value == compressed_result
    assert value == decompress(compressed_result).decode()

    # Test add
    assert cache.add("binary1-add", compressed_value) is True
    compressed_result = cache.get("binary1-add")
    assert compressed_value == compressed_result
    assert value == decompress(compressed_result).decode()

    # Test set_many
    cache.set_many({"binary1-set_many": compressed_value})
    compressed_result = cache.get("binary1-set_many")
    assert compressed_value == compressed_result
    assert value == decompress(compressed_result).decode()


def test_set_many() -> None:
    # Multiple keys can be set using set_many
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.get("key1") == "spam"
    assert cache.get("key2") == "eggs"


def test_set_many_returns_empty_list_on_success() -> None:
    """set_many() returns an empty list when all keys are inserted."""
    failing_keys = cache.set_many({"key1": "spam", "key2": "eggs"})
    assert failing_keys == []


def test_set_many_expiration() -> None:
    # set_many takes a second ``timeout`` parameter
    cache.set_many({"key1": "spam", "key2": "eggs"}, 0.05)
    wait_for("key1 and key2 expire", lambda: cache.get_many(["key1", "key2"]) == {})
    assert cache.get("key1") is None
    assert cache.get("key2") is None


def test_set_many_empty_data() -> None:
    assert cache.set_many({}) == []


def test_delete_many() -> None:
    # Multiple keys can be deleted using delete_many
    cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    cache.delete_many(["key1", "key2"])
    assert cache.get("key1") is None
    assert cache.get("key2") is None
    assert cache.get("key3") == "ham"


def test_delete_many_no_keys() -> None:
    assert cache.delete_many([]) is None


def test_clear() -> None:
    # The cache can be emptied using clear
    cache.set_many({"key1": "spam", "key2": "eggs"})
    cache.clear()
    assert cache.get("key1") is None
    assert cache.get("key2") is None


def test_long_timeout() -> None:
    """
    Follow memcached's convention where a timeout greater than 30 days is
    treated as an absolute expiration timestamp instead of a relative
    offset (#12399).
    """
    cache.set("key1", "eggs", 60 * 60 * 24 * 30 + 1)  # 30 days + 1 second
    assert cache.get("key1") == "eggs"

    assert cache.add("key2", "ham", 60 * 60 * 24 * 30 + 1) is True
    assert cache.get("key2") == "ham"

    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 60 * 60 * 24 * 30 + 1)
    assert cache.get("key3") == "sausage"
    assert cache.get("key4") == "lobster bisque"


def test_forever_timeout() -> None:
    """
    Passing in None into timeout results in a value that is cached forever
    """
    cache.set("key1", "eggs", None)
    assert cache.get("key1") == "eggs"

    assert cache.add("key2", "ham", None) is True
    assert cache.get("key2") == "ham"
    assert cache.add("key1", "new eggs", None) is False
    assert cache.get("key1") == "eggs"

    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
    assert cache.get("key3") == "sausage"
    assert cache.get("key4") == "lobster bisque"

    cache.set("key5", "belgian fries", timeout=SHORT)
    cache.set("canary", "x", timeout=SHORT)  # gone: key5's first timeout has passed
    assert cache.touch("key5", timeout=None) is True
    wait_for("the canary expires", expired("canary"))
    assert cache.get("key5") == "belgian fries"


def test_zero_timeout() -> None:
    """
    Passing in zero into timeout results in a value that is not cached
    """
    cache.set("key1", "eggs", 0)
    assert cache.get("key1") is None

    assert cache.add("key2", "ham", 0) is True
    assert cache.get("key2") is None

    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
    assert cache.get("key3") is None
    assert cache.get("key4") is None

    cache.set("key5", "belgian fries", timeout=5)
    assert cache.touch("key5", timeout=0) is True
    assert cache.get("key5") is None


def test_float_timeout() -> None:
    # Make sure a timeout given as a float doesn't crash anything.
    cache.set("key1", "spam", 100.2)
    assert cache.get("key1") == "spam"


def _perform_invalid_key_test(
    key: str,
    expected_warning: str,
    key_func: Callable[..., str] | None = None,
) -> None:
    """
    All the builtin backends should warn (except memcached that should
    error) on keys that would be refused by memcached. This encourages
    portable caching code without making it too difficult to use production
    backends with more liberal key rules. Refs #6447.
    """

    # mimic custom ``make_key`` method being defined since the default will
    # never show the below warnings
    def func(key: str, *args: Any) -> str:
        return key

    old_func = cache.key_func
    cache.key_func = key_func or func

    tests: list[tuple[str, list[Any]]] = [
        ("add", [key, 1]),
        ("get", [key]),
        ("set", [key, 1]),
        ("incr", [key]),
        ("decr", [key]),
        ("touch", [key]),
        ("delete", [key]),
        ("get_many", [[key, "b"]]),
        ("set_many", [{key: 1, "b": 2}]),
        ("delete_many", [[key, "b"]]),
    ]
    try:
        for operation, args in tests:
            with pytest.warns(CacheKeyWarning) as cm:
                getattr(cache, operation)(*args)
            assert str(cm[0].message) == expected_warning
    finally:
        cache.key_func = old_func


def test_invalid_key_characters() -> None:
    # memcached doesn't allow whitespace or control characters in keys.
    key = "key with spaces and 清"
    _perform_invalid_key_test(key, KEY_ERRORS_WITH_MEMCACHED_MSG % key)


def test_invalid_key_length() -> None:
    # memcached limits key length to 250.
    key = ("a" * 250) + "清"
    expected_warning = (
        f"Cache key will cause errors if used with memcached: {key!r} (longer than 250)"
    )
    _perform_invalid_key_test(key, expected_warning)


def test_invalid_with_version_key_length() -> None:
    # Custom make_key() that adds a version to the key and exceeds the
    # limit.
    def key_func(key: str, *args: Any) -> str:
        return key + ":1"

    key = "a" * 249
    expected_warning = (
        f"Cache key will cause errors if used with memcached: {key_func(key)!r} (longer than 250)"
    )
    _perform_invalid_key_test(key, expected_warning, key_func=key_func)


def test_cache_versioning_get_set() -> None:
    # set, using default version = 1
    cache.set("answer1", 42)
    assert cache.get("answer1") == 42
    assert cache.get("answer1", version=1) == 42
    assert cache.get("answer1", version=2) is None

    assert caches["v2"].get("answer1") is None
    assert caches["v2"].get("answer1", version=1) == 42
    assert caches["v2"].get("answer1", version=2) is None

    # set, default version = 1, but manually override version = 2
    cache.set("answer2", 42, version=2)
    assert cache.get("answer2") is None
    assert cache.get("answer2", version=1) is None
    assert cache.get("answer2", version=2) == 42

    assert caches["v2"].get("answer2") == 42
    assert caches["v2"].get("answer2", version=1) is None
    assert caches["v2"].get("answer2", version=2) == 42

    # v2 set, using default version = 2
    caches["v2"].set("answer3", 42)
    assert cache.get("answer3") is None
    assert cache.get("answer3", version=1) is None
    assert cache.get("answer3", version=2) == 42

    assert caches["v2"].get("answer3") == 42
    assert caches["v2"].get("answer3", version=1) is None
    assert caches["v2"].get("answer3", version=2) == 42

    # v2 set, default version = 2, but manually override version = 1
    caches["v2"].set("answer4", 42, version=1)
    assert cache.get("answer4") == 42
    assert cache.get("answer4", version=1) == 42
    assert cache.get("answer4", version=2) is None

    assert caches["v2"].get("answer4") is None
    assert caches["v2"].get("answer4", version=1) == 42
    assert caches["v2"].get("answer4", version=2) is None


def test_cache_versioning_add() -> None:
    # add, default version = 1, but manually override version = 2
    assert cache.add("answer1", 42, version=2) is True
    assert cache.get("answer1", version=1) is None
    assert cache.get("answer1", version=2) == 42

    assert cache.add("answer1", 37, version=2) is False
    assert cache.get("answer1", version=1) is None
    assert cache.get("answer1", version=2) == 42

    assert cache.add("answer1", 37, version=1) is True
    assert cache.get("answer1", version=1) == 37
    assert cache.get("answer1", version=2) == 42

    # v2 add, using default version = 2
    assert caches["v2"].add("answer2", 42) is True
    assert cache.get("answer2", version=1) is None
    assert cache.get("answer2", version=2) == 42

    assert caches["v2"].add("answer2", 37) is False
    assert cache.get("answer2", version=1) is None
    assert cache.get("answer2", version=2) == 42

    assert caches["v2"].add("answer2", 37, version=1) is True
    assert cache.get("answer2", version=1) == 37
    assert cache.get("answer2", version=2) == 42

    # v2 add, default version = 2, but manually override version = 1
    assert caches["v2"].add("answer3", 42, version=1) is True
    assert cache.get("answer3", version=1) == 42
    assert cache.get("answer3", version=2) is None

    assert caches["v2"].add("answer3", 37, version=1) is False
    assert cache.get("answer3", version=1) == 42
    assert cache.get("answer3", version=2) is None

    assert caches["v2"].add("answer3", 37) is True
    assert cache.get("answer3", version=1) == 42
    assert cache.get("answer3", version=2) == 37


def test_cache_versioning_has_key() -> None:
    cache.set("answer1", 42)

    # has_key
    assert cache.has_key("answer1") is True
    assert cache.has_key("answer1", version=1) is True
    assert cache.has_key("answer1", version=2) is False

    assert caches["v2"].has_key("answer1") is False
    assert caches["v2"].has_key("answer1", version=1) is True
    assert caches["v2"].has_key("answer1", version=2) is False


def test_cache_versioning_delete() -> None:
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    assert cache.delete("answer1") is True
    assert cache.get("answer1", version=1) is None
    assert cache.get("answer1", version=2) == 42

    cache.set("answer2", 37, version=1)
    cache.set("answer2", 42, version=2)
    assert cache.delete("answer2", version=2) is True
    assert cache.get("answer2", version=1) == 37
    assert cache.get("answer2", version=2) is None

    cache.set("answer3", 37, version=1)
    cache.set("answer3", 42, version=2)
    assert caches["v2"].delete("answer3") is True
    assert cache.get("answer3", version=1) == 37
    assert cache.get("answer3", version=2) is None

    cache.set("answer4", 37, version=1)
    cache.set("answer4", 42, version=2)
    assert caches["v2"].delete("answer4", version=1) is True
    assert cache.get("answer4", version=1) is None
    assert cache.get("answer4", version=2) == 42


def test_cache_versioning_incr_decr() -> None:
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    assert cache.incr("answer1") == 38
    assert cache.get("answer1", version=1) == 38
    assert cache.get("answer1", version=2) == 42
    assert cache.decr("answer1") == 37
    assert cache.get("answer1", version=1) == 37
    assert cache.get("answer1", version=2) == 42

    cache.set("answer2", 37, version=1)
    cache.set("answer2", 42, version=2)
    assert cache.incr("answer2", version=2) == 43
    assert cache.get("answer2", version=1) == 37
    assert cache.get("answer2", version=2) == 43
    assert cache.decr("answer2", version=2) == 42
    assert cache.get("answer2", version=1) == 37
    assert cache.get("answer2", version=2) == 42

    cache.set("answer3", 37, version=1)
    cache.set("answer3", 42, version=2)
    assert caches["v2"].incr("answer3") == 43
    assert cache.get("answer3", version=1) == 37
    assert cache.get("answer3", version=2) == 43
    assert caches["v2"].decr("answer3") == 42
    assert cache.get("answer3", version=1) == 37
    assert cache.get("answer3", version=2) == 42

    cache.set("answer4", 37, version=1)
    cache.set("answer4", 42, version=2)
    assert caches["v2"].incr("answer4", version=1) == 38
    assert cache.get("answer4", version=1) == 38
    assert cache.get("answer4", version=2) == 42
    assert caches["v2"].decr("answer4", version=1) == 37
    assert cache.get("answer4", version=1) == 37
    assert cache.get("answer4", version=2) == 42


def test_cache_versioning_get_set_many() -> None:
    # set, using default version = 1
    cache.set_many({"ford1": 37, "arthur1": 42})
    assert cache.get_many(["ford1", "arthur1"]) == {"ford1": 37, "arthur1": 42}
    assert cache.get_many(["ford1", "arthur1"], version=1) == {"ford1": 37, "arthur1": 42}
    assert cache.get_many(["ford1", "arthur1"], version=2) == {}

    assert caches["v2"].get_many(["ford1", "arthur1"]) == {}
    assert caches["v2"].get_many(["ford1", "arthur1"], version=1) == {"ford1": 37, "arthur1": 42}
    assert caches["v2"].get_many(["ford1", "arthur1"], version=2) == {}

    # set, default version = 1, but manually override version = 2
    cache.set_many({"ford2": 37, "arthur2": 42}, version=2)
    assert cache.get_many(["ford2", "arthur2"]) == {}
    assert cache.get_many(["ford2", "arthur2"], version=1) == {}
    assert cache.get_many(["ford2", "arthur2"], version=2) == {"ford2": 37, "arthur2": 42}

    assert caches["v2"].get_many(["ford2", "arthur2"]) == {"ford2": 37, "arthur2": 42}
    assert caches["v2"].get_many(["ford2", "arthur2"], version=1) == {}
    assert caches["v2"].get_many(["ford2", "arthur2"], version=2) == {"ford2": 37, "arthur2": 42}

    # v2 set, using default version = 2
    caches["v2"].set_many({"ford3": 37, "arthur3": 42})
    assert cache.get_many(["ford3", "arthur3"]) == {}
    assert cache.get_many(["ford3", "arthur3"], version=1) == {}
    assert cache.get_many(["ford3", "arthur3"], version=2) == {"ford3": 37, "arthur3": 42}

    assert caches["v2"].get_many(["ford3", "arthur3"]) == {"ford3": 37, "arthur3": 42}
    assert caches["v2"].get_many(["ford3", "arthur3"], version=1) == {}
    assert caches["v2"].get_many(["ford3", "arthur3"], version=2) == {"ford3": 37, "arthur3": 42}

    # v2 set, default version = 2, but manually override version = 1
    caches["v2"].set_many({"ford4": 37, "arthur4": 42}, version=1)
    assert cache.get_many(["ford4", "arthur4"]) == {"ford4": 37, "arthur4": 42}
    assert cache.get_many(["ford4", "arthur4"], version=1) == {"ford4": 37, "arthur4": 42}
    assert cache.get_many(["ford4", "arthur4"], version=2) == {}

    assert caches["v2"].get_many(["ford4", "arthur4"]) == {}
    assert caches["v2"].get_many(["ford4", "arthur4"], version=1) == {"ford4": 37, "arthur4": 42}
    assert caches["v2"].get_many(["ford4", "arthur4"], version=2) == {}


def test_incr_version() -> None:
    cache.set("answer", 42, version=2)
    assert cache.get("answer") is None
    assert cache.get("answer", version=1) is None
    assert cache.get("answer", version=2) == 42
    assert cache.get("answer", version=3) is None

    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer") is None
    assert cache.get("answer", version=1) is None
    assert cache.get("answer", version=2) is None
    assert cache.get("answer", version=3) == 42

    caches["v2"].set("answer2", 42)
    assert caches["v2"].get("answer2") == 42
    assert caches["v2"].get("answer2", version=1) is None
    assert caches["v2"].get("answer2", version=2) == 42
    assert caches["v2"].get("answer2", version=3) is None

    assert caches["v2"].incr_version("answer2") == 3
    assert caches["v2"].get("answer2") is None
    assert caches["v2"].get("answer2", version=1) is None
    assert caches["v2"].get("answer2", version=2) is None
    assert caches["v2"].get("answer2", version=3) == 42

    with pytest.raises(ValueError, match="not found"):
        cache.incr_version("does_not_exist")

    cache.set("null", None)
    assert cache.incr_version("null") == 2


def test_decr_version() -> None:
    cache.set("answer", 42, version=2)
    assert cache.get("answer") is None
    assert cache.get("answer", version=1) is None
    assert cache.get("answer", version=2) == 42

    assert cache.decr_version("answer", version=2) == 1
    assert cache.get("answer") == 42
    assert cache.get("answer", version=1) == 42
    assert cache.get("answer", version=2) is None

    caches["v2"].set("answer2", 42)
    assert caches["v2"].get("answer2") == 42
    assert caches["v2"].get("answer2", version=1) is None
    assert caches["v2"].get("answer2", version=2) == 42

    assert caches["v2"].decr_version("answer2") == 1
    assert caches["v2"].get("answer2") is None
    assert caches["v2"].get("answer2", version=1) == 42
    assert caches["v2"].get("answer2", version=2) is None

    with pytest.raises(ValueError, match="not found"):
        cache.decr_version("does_not_exist", version=2)

    cache.set("null", None, version=2)
    assert cache.decr_version("null", version=2) == 1


def test_custom_key_func() -> None:
    # Two caches with different key functions aren't visible to each other
    cache.set("answer1", 42)
    assert cache.get("answer1") == 42
    assert caches["custom_key"].get("answer1") is None
    assert caches["custom_key2"].get("answer1") is None

    caches["custom_key"].set("answer2", 42)
    assert cache.get("answer2") is None
    assert caches["custom_key"].get("answer2") == 42
    assert caches["custom_key2"].get("answer2") == 42


def test_cache_write_unpicklable_object() -> None:
    with override_settings(CACHE_MIDDLEWARE_ALIAS=DEFAULT_CACHE_ALIAS):
        _cache_write_unpicklable_object()


def _cache_write_unpicklable_object() -> None:
    fetch_middleware = FetchFromCacheMiddleware(empty_response)

    request = FACTORY.get("/cache/test")
    request._cache_update_cache = True
    get_cache_data = FetchFromCacheMiddleware(empty_response).process_request(request)
    assert get_cache_data is None

    content = "Testing cookie serialization."

    def get_response(req: Any) -> HttpResponse:
        response = HttpResponse(content)
        response.set_cookie("foo", "bar")
        return response

    update_middleware = UpdateCacheMiddleware(get_response)
    response = update_middleware(request)

    get_cache_data = fetch_middleware.process_request(request)
    assert get_cache_data is not None
    assert get_cache_data.content == content.encode()
    assert get_cache_data.cookies == response.cookies

    UpdateCacheMiddleware(lambda req: get_cache_data)(request)
    get_cache_data = fetch_middleware.process_request(request)
    assert get_cache_data is not None
    assert get_cache_data.content == content.encode()
    assert get_cache_data.cookies == response.cookies


def test_add_fail_on_pickleerror() -> None:
    # Shouldn't fail silently if trying to cache an unpicklable type.
    with pytest.raises(pickle.PickleError):
        cache.add("unpicklable", Unpicklable())


def test_set_fail_on_pickleerror() -> None:
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())


def test_get_or_set() -> None:
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("null", None) is None
    # Previous get_or_set() stores None in the cache.
    assert cache.get("null", "default") is None


def test_get_or_set_callable() -> None:
    def my_callable() -> str:
        return "value"

    assert cache.get_or_set("mykey", my_callable) == "value"
    assert cache.get_or_set("mykey", my_callable()) == "value"

    assert cache.get_or_set("null", lambda: None) is None
    # Previous get_or_set() stores None in the cache.
    assert cache.get("null", "default") is None


def test_get_or_set_version() -> None:
    msg = "get_or_set() missing 1 required positional argument: 'default'"
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    with pytest.raises(TypeError, match=re.escape(msg)):
        cache.get_or_set("brian")
    with pytest.raises(TypeError, match=re.escape(msg)):
        cache.get_or_set("brian", version=1)
    assert cache.get("brian", version=1) is None
    assert cache.get_or_set("brian", 42, version=1) == 42
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=3) is None


def test_get_or_set_racing() -> None:
    with mock.patch(f"{settings.CACHES['default']['BACKEND']}.add") as cache_add:
        # Simulate cache.add() failing to add a value. In that case, the
        # default value should be returned.
        cache_add.return_value = False
        assert cache.get_or_set("key", "default") == "default"


async def test_get_many_async_uses_specialized_implementation() -> None:
    if (
        cache.get_many.__func__ is not BaseCache.get_many
        and cache.aget_many.__func__ is BaseCache.aget_many
    ):
        with mock.patch.object(cache, "get_many") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aget_many({})
            mocked.assert_called_once()


async def test_set_many_async_uses_specialized_implementation() -> None:
    if (
        cache.set_many.__func__ is not BaseCache.set_many
        and cache.aset_many.__func__ is BaseCache.aset_many
    ):
        with mock.patch.object(cache, "set_many") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aset_many({})
            mocked.assert_called_once()


async def test_delete_many_async_uses_specialized_implementation() -> None:
    if (
        cache.delete_many.__func__ is not BaseCache.delete_many
        and cache.adelete_many.__func__ is BaseCache.adelete_many
    ):
        with mock.patch.object(cache, "delete_many") as mocked:
            mocked.__func__ = lambda x: x
            await cache.adelete_many({})
            mocked.assert_called_once()


async def test_get_or_set_async_uses_specialized_implementation() -> None:
    await cache.aset("key", "value")
    if (
        cache.get_or_set.__func__ is not BaseCache.get_or_set
        and cache.aget_or_set.__func__ is BaseCache.aget_or_set
    ):
        with mock.patch.object(cache, "get_or_set") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aget_or_set("key")
            mocked.assert_called_once()


async def test_has_key_async_uses_specialized_implementation() -> None:
    await cache.aset("key", "value")
    if (
        cache.has_key.__func__ is not BaseCache.has_key
        and cache.ahas_key.__func__ is BaseCache.ahas_key
    ):
        with mock.patch.object(cache, "has_key") as mocked:
            mocked.__func__ = lambda x: x
            await cache.ahas_key("key")
            mocked.assert_called_once()


async def test_incr_async_uses_specialized_implementation() -> None:
    await cache.aset("key", 1)
    if cache.incr.__func__ is not BaseCache.incr and cache.aincr.__func__ is BaseCache.aincr:
        with mock.patch.object(cache, "incr") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aincr("key")
            mocked.assert_called_once()


async def test_incr_version_async_uses_specialized_implementation() -> None:
    await cache.aset("key", "value", version=1)
    if (
        cache.incr_version.__func__ is not BaseCache.incr_version
        and cache.aincr_version.__func__ is BaseCache.aincr_version
    ):
        with mock.patch.object(cache, "incr_version") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aincr_version("key")
            mocked.assert_called_once()


async def test_close_async_uses_specialized_implementation() -> None:
    if cache.close.__func__ is not BaseCache.close and cache.aclose.__func__ is BaseCache.aclose:
        with mock.patch.object(cache, "close") as mocked:
            mocked.__func__ = lambda x: x
            await cache.aclose()
            mocked.assert_called_once()


# -- from Django's memcached tests -----------------------------------------------------


def test_default_never_expiring_timeout() -> None:
    # Regression test for #22845 (alias "never": TIMEOUT=None)
    caches["never"].set("infinite_foo", "bar")
    assert caches["never"].get("infinite_foo") == "bar"


def test_default_far_future_timeout() -> None:
    # Regression test for #22845 (alias "far": TIMEOUT of a year)
    caches["far"].set("future_foo", "bar")
    assert caches["far"].get("future_foo") == "bar"


def test_set_many_returns_failing_keys() -> None:
    def fail_set_many(mapping: dict[str, bytes], **kwargs: Any) -> dict[str, Exception]:
        return dict.fromkeys(mapping, PeerUnavailable("no ack"))

    with mock.patch.object(GridKV, "set_many", side_effect=fail_set_many):
        failing_keys = cache.set_many({"key": "value"})
        assert failing_keys == ["key"]


# -- nodes ---------------------------------------------------------------------------------


def test_one_node_per_process_and_configuration() -> None:
    node = cache.kv
    # Another thread gets a backend object of its own, on the same node.
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.extend([caches["default"], cache.kv]))
    thread.start()
    thread.join(10)
    assert seen[0] is not caches["default"]
    assert seen[1] is node
    # Aliases with the same GridKV configuration share the node; "peer" has its own.
    for alias in ("prefix", "v2", "custom_key", "never"):
        assert caches[alias].kv is node
    assert caches["peer"].kv is not node
    assert caches["peer"].kv.node_id == "django-b"
    # close() after a request leaves the node open.
    cache.close()
    cache.set("after_close", 1)
    assert cache.get("after_close") == 1


def test_two_aliases_see_each_others_writes() -> None:
    a, b = caches["default"], caches["peer"]
    a.set("shared", {"from": "a"})
    wait_for("b reads a's write", lambda: b.get("shared") == {"from": "a"})
    b.set("counter", 10)
    wait_for("a reads b's counter", lambda: a.get("counter") == 10)
    assert a.incr("counter") == 11
    assert b.incr("counter", 5) == 16  # atomic on the owner, whoever calls
    wait_for("a reads the sum", lambda: a.get("counter") == 16)
    assert b.delete("shared") is True
    wait_for("a sees b's delete", lambda: a.get("shared") is None)
    # The keys are spread over both nodes (replica_count 1), each holding some.
    a.set_many({f"spread{i}": i for i in range(40)})
    wait_for("b reads them all", lambda: len(b.get_many([f"spread{i}" for i in range(40)])) == 40)
    assert a.kv.stats().storage.keys > 0
    assert b.kv.stats().storage.keys > 0
    b.clear()
    wait_for(
        "a sees the cluster cleared", lambda: a.get_many([f"spread{i}" for i in range(40)]) == {}
    )


def test_close_nodes_racing_a_first_use_leaves_no_node_out_of_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close_nodes() between a first use's look-up of its slot and its lock on it: the first
    use makes its node in the registry of the moment (not in the closed slot, where no
    close_nodes() would ever find it and a second node would be made on its address)."""
    registry = backend_module._Registry()
    monkeypatch.setattr(backend_module, "_registry", registry)  # the module's nodes are left be
    options = {"local_node_id": "django-race", "local_address": "django-race:1", **MEMORY}
    backend = GridKVCache("", {"OPTIONS": options})
    key = backend._config.node_key
    entered, gate, lock = threading.Event(), threading.Event(), threading.Lock()

    class GatedLock:  # the first use takes the slot's lock only once close_nodes() has
        def __enter__(self) -> None:
            if threading.current_thread().name == "first-use":
                entered.set()
                assert gate.wait(10)
            lock.acquire()

        def __exit__(self, *exc: object) -> None:
            lock.release()

    registry.slots[key] = backend_module._Slot(lock=GatedLock())  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            backend.set("k", "v")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first_use, name="first-use")
    thread.start()
    assert entered.wait(10)
    close_nodes(timeout=1)
    gate.set()
    thread.join(30)
    assert errors == []
    made = backend._kv
    assert made is not None
    assert registry.slots[key].kv is made  # registered: the next close_nodes() finds it
    assert backend.get("k") == "v"  # the same node serves on (no second one on its address)
    assert backend.kv is made
    close_nodes(timeout=1)
    with pytest.raises(ShuttingDown):
        made.get("k")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_makes_a_node_of_its_own(tmp_path: Path) -> None:
    parent_node = cache.kv
    cache.set("from_parent", "p")
    # Backends made (so configured) in the parent, used first in the child, without a
    # local_node_id: the child's nodes are named after the child's PID, not the parent's.
    anonymous = GridKVCache("", {"OPTIONS": {"local_address": "django-anon:1", **MEMORY}})
    (tmp_path / "node.json").write_text(json.dumps({"local_address": "django-file:2", **MEMORY}))
    from_file = GridKVCache(str(tmp_path / "node.json"), {})

    def in_child() -> Iterator[tuple[str, str]]:
        # The parent's node refuses every call in the child.
        try:
            yield "parent node", repr(parent_node.get(":1:from_parent"))
        except GridKVError as exc:
            yield "parent node", type(exc).__name__
        # The child's memory network is a copy of the parent's, its endpoints the
        # parent's; a fresh one stands for the sockets a real child would open.
        MemoryNetwork._default = None
        # The backend object Django made in the parent (this thread's) makes a node of
        # the child's own on its next call.
        node = cache.kv
        yield "child's node", "new" if node is not parent_node else "the parent's"
        cache.set("from_child", "c")
        yield "set and get", repr(cache.get("from_child"))
        cache.set("n", 1)
        yield "incr", repr(cache.incr("n"))
        pid = os.getpid()
        for name, backend in (("OPTIONS", anonymous), ("LOCATION", from_file)):
            node_id = backend.kv.node_id
            yield f"{name} node id", "child's pid" if node_id.endswith(f"-{pid}") else node_id

    report = in_forked_child(in_child, timeout=30)
    assert report == {
        "parent node": "ShuttingDown",
        "child's node": "new",
        "set and get": "'c'",
        "incr": "2",
        "OPTIONS node id": "child's pid",
        "LOCATION node id": "child's pid",
    }
    # The parent's node is untouched, and has not seen the child's writes.
    assert cache.kv is parent_node
    assert cache.get("from_parent") == "p"
    assert cache.get("from_child") is None


# -- configuration ---------------------------------------------------------------------


def test_location_is_a_config_file_with_options_on_top(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "local_node_id: django-file\n"
        "local_address: django-file:1\n"
        "network:\n  type: memory\n"
        "ttl: 5m\n"
    )
    backend = GridKVCache(str(path), {"OPTIONS": {"ttl": 7, "READY_TIMEOUT": 5}})
    options = backend.kv.options
    assert (backend.kv.node_id, options.network.type, options.ttl) == ("django-file", "memory", 7)
    backend.set("k", [1, 2])
    assert backend.get("k") == [1, 2]
    # Backend objects of the same configuration, from the file or not, share the node.
    again = GridKVCache(str(path), {"OPTIONS": {"ttl": 7}})
    same = GridKVCache(
        "",
        {
            "OPTIONS": {
                "local_node_id": "django-file",
                "local_address": "django-file:1",
                "ttl": 7,
                **MEMORY,
            }
        },
    )
    assert again.kv is backend.kv
    assert same.kv is backend.kv
    backend.clear()
    with pytest.raises(ConfigError, match="missing.yaml"):
        GridKVCache(str(tmp_path / "missing.yaml"), {})


def test_cull_options_are_refused() -> None:
    for name in ("MAX_ENTRIES", "CULL_FREQUENCY"):
        with pytest.raises(ConfigError, match=f"{name}.*storage.max_memory_mb"):
            GridKVCache("", {"OPTIONS": {**node_options("a"), name: 30}})


def test_bad_options_name_the_key() -> None:
    cases: list[tuple[Any, str]] = [
        ({"LOCAL_NODE_ID": "x"}, "LOCAL_NODE_ID.*not an option of the backend"),
        ({"local_nod_id": "x"}, "local_nod_id"),
        ({"replica_count": 0}, "replica_count"),
        ({"network": {"timeout": "soon"}}, "network.timeout"),
        ({"READY_TIMEOUT": -1}, "READY_TIMEOUT"),
        ({"READY_TIMEOUT": True}, "READY_TIMEOUT"),
        ({"PICKLE_PROTOCOL": 99}, "PICKLE_PROTOCOL"),
        (["not", "a", "mapping"], "OPTIONS must be a mapping"),
    ]
    for options, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            GridKVCache("", {"OPTIONS": options})
    with pytest.raises(ConfigError, match="LOCATION must be the path"):
        GridKVCache(["a", "b"], {})  # type: ignore[arg-type]


def test_a_node_that_cannot_join_raises_not_ready() -> None:
    options = node_options("lonely", "django-nowhere:1", READY_TIMEOUT=0.3)
    backend = GridKVCache("", {"OPTIONS": options})
    with pytest.raises(NotReady, match="django-nowhere:1"):
        backend.get("k")
    # The node is kept and keeps trying its seeds: later calls fail at once.
    with pytest.raises(NotReady, match="still joining"):
        backend.set("k", 1)
    assert READY_TIMEOUT == 10.0


def test_pickle_protocol() -> None:
    backend = GridKVCache("", {"OPTIONS": {**node_options("a"), "PICKLE_PROTOCOL": 2}})
    backend.set("p2", ["x"])
    assert cache.kv.get(":1:p2")[:2] == b"\x80\x02"
    assert cache.get("p2") == ["x"]


# -- semantics -----------------------------------------------------------------------------


def test_get_backend_timeout() -> None:
    # Django's timeout -> GridKV's ttl: None forever (0), 0 or less "do not store" (None).
    ttl = cache._ttl
    assert ttl(DEFAULT_TIMEOUT) == 300.0
    assert caches["never"]._ttl(DEFAULT_TIMEOUT) == 0.0
    assert ttl(None) == 0.0
    assert ttl(10) == 10.0
    assert ttl(0.25) == 0.25
    assert ttl(0) is None
    assert ttl(-5) is None
    assert ttl(10**400) == 0.0  # past GridKV's 100 years: forever
    assert ttl(-(10**400)) is None  # too large for a float, and negative: not stored
    assert ttl(float("inf")) == 0.0
    for bad in ("10", True, float("nan"), [1]):
        with pytest.raises(InvalidArgument, match="timeout"):
            cache.set("k", 1, timeout=bad)


def test_negative_timeout_deletes() -> None:
    cache.set("key1", "eggs")
    cache.set("key1", "spam", -1)
    assert cache.get("key1") is None
    assert cache.add("key2", "ham", -1) is True
    assert cache.get("key2") is None
    cache.set("key3", "sausage")
    assert cache.add("key3", "ham", -1) is False
    assert cache.get("key3") == "sausage"
    assert cache.touch("key3", -1) is True
    assert cache.touch("key3", -1) is False
    cache.set("key4", "eggs")
    cache.set("key4", "spam", -(10**400))  # an int no float holds
    assert cache.get("key4") is None


def test_ints_are_stored_as_gridkv_counters() -> None:
    kv = cache.kv
    cache.set("n", 41)
    assert kv.get(":1:n") == b"41"  # decimal ASCII, as GridKV's incr keeps it
    assert kv.incr(":1:n") == 42  # GridKV's own incr on Django's key
    assert cache.get("n") == 42
    cache.set("negative", -7)
    assert kv.get(":1:negative") == b"-7"
    assert cache.decr("negative", 3) == -10
    # Bools and ints beyond 64 bits are pickled, and come back as they were.
    for value in (True, 2**70, -(2**63) - 1):
        cache.set("pickled", value)
        assert kv.get(":1:pickled")[:1] == b"\x80"
        assert cache.get("pickled") == value
        assert type(cache.get("pickled")) is type(value)
    cache.set("big", 2**63 - 1)
    with pytest.raises(OperationRefused, match="overflow"):
        cache.incr("big")
    assert cache.get("big") == 2**63 - 1
    # incr keeps the key's timeout (a canary set after it, with the same one).
    cache.set("short", 1, timeout=SHORT)
    cache.set("canary", 1, timeout=SHORT)
    assert cache.incr("short") == 2
    wait_for("the canary expires", expired("canary"))
    wait_for("short expires", expired("short"))


def test_gridkv_errors_surface_as_themselves() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        with pytest.raises(KeyTooLarge, match="max_key_bytes=1024"):
            cache.set("k" * 2000, 1)
    cache.set("small_value", "a")
    with pytest.raises(ValueTooLarge, match="max_value_bytes"):
        cache.set("small_value", b"a" * (4 * 1024 * 1024 + 1))
    assert cache.get("small_value") == "a"  # unlike memcached, kept
    with pytest.raises(InvalidArgument, match="delta"):
        cache.incr("small_value", 1.5)
    with pytest.raises(OperationRefused, match="not an integer"):
        cache.incr("small_value")
    with pytest.raises(OperationRefused, match="not in the cache"):
        cache.incr("missing")


def test_delete_many_reports_keys_it_could_not_delete() -> None:
    cache.set_many({"a": 1, "b": 2})

    def fail_b(keys: list[str], **kwargs: Any) -> dict[str, Exception]:
        return {":1:b": PeerUnavailable("django-b did not answer")}

    with (
        mock.patch.object(GridKV, "delete_many", side_effect=fail_b),
        pytest.raises(BulkOperationError, match="1 key.*':1:b'.*did not answer"),
    ):
        cache.delete_many(["a", "b"])


async def test_async_api() -> None:
    await cache.aset("a", 1)
    assert await cache.aadd("a", 2) is False
    assert await cache.aadd("b", "two") is True
    assert await cache.aget("a") == 1
    assert await cache.aincr("a", 4) == 5
    assert await cache.adecr("a") == 4
    assert await cache.aget_many(["a", "b", "c"]) == {"a": 4, "b": "two"}
    assert await cache.aset_many({"c": 3, "d": 4}) == []
    assert await cache.ahas_key("c") is True
    assert await cache.atouch("c", None) is True
    assert await cache.adelete("c") is True
    await cache.adelete_many(["d"])
    assert await cache.aget_or_set("e", "five") == "five"
    await cache.aclear()
    assert await cache.aget_many(["a", "b", "e"]) == {}
    await cache.aclose()


def test_a_set_right_after_an_add_of_a_remote_key_is_kept() -> None:
    # About half the keys' primary is django-b; each try loses the set there most times.
    lost = []
    for i in range(200):
        key = f"race{i}"
        cache.add(key, "added")
        cache.set(key, "set")
        if cache.get(key) != "set":
            lost.append(key)
    assert lost == []


# -- the example -----------------------------------------------------------------------


def test_example_django_app_runs() -> None:
    app = ROOT / "examples" / "django_app"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDKV_", "DJANGO_"))}
    run = subprocess.run(
        [sys.executable, str(app / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for expected in (
        "GET /        -> hits: 1",
        "GET /        -> hits: 2",
        "GET /        -> hits: 3",
        "GET /report  -> report rendered 1 time(s)",
        "GET /report  -> report rendered 1 time(s) (a cached response)",
        "cache: node django-example-1, 1 member(s)",
    ):
        assert expected in lines, run.stdout
    check = subprocess.run(
        [sys.executable, str(app / "manage.py"), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout
