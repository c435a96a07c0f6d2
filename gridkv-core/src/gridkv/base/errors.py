"""The exceptions GridKV raises.

Every error derives from :class:`GridKVError`. Errors about a bad argument also derive from
:class:`ValueError` (or :class:`TypeError` for the wrong type), and errors that mean "this took
too long" also derive from :class:`TimeoutError`, so callers can catch either the GridKV class
or the standard one. Each message names the key, peer or option it is about and, where there is
one, what to do about it.
"""

from __future__ import annotations

__all__ = [
    "GridKVError",
    "InvalidKey",
    "EmptyKey",
    "KeyTooLarge",
    "InvalidValue",
    "InvalidArgument",
    "ValueTooLarge",
    "MemoryLimitExceeded",
    "ShuttingDown",
    "NotReady",
    "QuorumNotReached",
    "VersionMismatch",
    "PeerUnavailable",
    "PeerTimeout",
    "AuthenticationError",
    "ProtocolError",
    "ClockDriftExceeded",
    "ConfigError",
    "BackendNotInstalled",
    "OperationRefused",
    "BulkOperationError",
]


class GridKVError(Exception):
    """Base class of every error GridKV raises."""


class InvalidKey(GridKVError, TypeError):
    """A key is not a ``str``."""


class EmptyKey(GridKVError, ValueError):
    """A key is the empty string."""


class KeyTooLarge(GridKVError, ValueError):
    """A key's UTF-8 encoding is longer than ``max_key_bytes``."""


class InvalidValue(GridKVError, TypeError):
    """A value is not bytes-like (``bytes``, ``bytearray`` or ``memoryview``)."""


class InvalidArgument(GridKVError, ValueError):
    """An argument other than the key or value is bad (a negative TTL, an unknown level)."""


class ValueTooLarge(GridKVError, ValueError):
    """A value is longer than ``max_value_bytes``."""


class MemoryLimitExceeded(GridKVError):
    """A write would take the storage over ``storage.max_memory_mb`` and eviction is off."""


class OperationRefused(GridKVError, ValueError):
    """An atomic operation does not apply to the key's value.

    Not an integer, an overflow, a result longer than ``max_value_bytes``; the message is
    Redis's for the same case.
    """


class BulkOperationError(GridKVError):
    """Some keys of a bulk operation failed; the others were done.

    :ivar values: what ``get_many`` read (the keys found), empty for the other operations.
    :ivar errors: each failed key's error.
    """

    def __init__(
        self, message: str, values: dict[str, bytes], errors: dict[str, GridKVError]
    ) -> None:
        super().__init__(message)
        self.values = values
        self.errors = errors


class LoaderFailed(GridKVError):
    """The loader ``get_or_set`` ran for a missing key failed (here or on another node).

    Callers that waited for another caller's load get it; its message names the loader's
    error, which is its ``__cause__`` when the loader ran in this process.
    """


class ShuttingDown(GridKVError):
    """The node is closing or closed; no further operation is accepted."""


class NotReady(GridKVError, TimeoutError):
    """The node did not become ready in time (for example, no seed answered)."""


class QuorumNotReached(GridKVError, TimeoutError):
    """Too few replicas acknowledged an operation at the requested consistency level."""


class VersionMismatch(GridKVError):
    """A version is not the one expected.

    ``compare_and_set`` met another write of the key (``current`` is the version found, 0
    for none), or a peer speaks a protocol or data version this node does not understand.
    """

    def __init__(self, message: str, current: int = 0) -> None:
        super().__init__(message)
        self.current = current


class PeerUnavailable(GridKVError, ConnectionError):
    """A peer could not be reached: unknown address, refused, reset or partitioned away."""


class PeerTimeout(PeerUnavailable, TimeoutError):
    """A peer did not answer a request within its time-out."""


class AuthenticationError(GridKVError):
    """A peer's identity or a message's authenticity could not be verified."""


class ProtocolError(GridKVError, ValueError):
    """Bytes received from the network are not a valid GridKV message or frame."""


class ClockDriftExceeded(ProtocolError):
    """A peer's clock is further ahead of this node's than ``max_clock_drift`` allows."""


class ConfigError(GridKVError, ValueError):
    """A configuration key is unknown or has a bad value; the message names both."""


class BackendNotInstalled(ConfigError):
    """A transport, storage, authenticator or membership backend asked for is not installed."""
