"""GridKV for Python: a distributed in-memory key-value cache that Python programs embed.

Start with :class:`AsyncGridKV` (asyncio) or :class:`GridKV` (blocking); configure with
keyword options, an :class:`Options`, or :func:`load_config`. Every error is a
:class:`GridKVError`.
"""

from __future__ import annotations

from gridkv.api import TTL, AsyncGridKV, GridKV, Value
from gridkv.base.config import load_config
from gridkv.base.errors import (
    AuthenticationError,
    BackendNotInstalled,
    BulkOperationError,
    ClockDriftExceeded,
    ConfigError,
    EmptyKey,
    GridKVError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    LoaderFailed,
    MemoryLimitExceeded,
    NotReady,
    OperationRefused,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
    VersionMismatch,
)
from gridkv.base.options import LogOptions, NetworkOptions, Options, StorageOptions
from gridkv.node import version
from gridkv.node.stats import (
    ClusterStats,
    MemberInfo,
    NetworkStats,
    ReplicationStats,
    Stats,
    StorageStats,
)
from gridkv.plugins.hookspecs import hookimpl

__version__ = version()

__all__ = [
    # API
    "AsyncGridKV",
    "GridKV",
    "TTL",
    "Value",
    # configuration
    "Options",
    "NetworkOptions",
    "StorageOptions",
    "LogOptions",
    "load_config",
    # figures
    "Stats",
    "ClusterStats",
    "MemberInfo",
    "NetworkStats",
    "ReplicationStats",
    "StorageStats",
    # plugins
    "hookimpl",
    # errors
    "GridKVError",
    "InvalidKey",
    "EmptyKey",
    "KeyTooLarge",
    "InvalidValue",
    "InvalidArgument",
    "ValueTooLarge",
    "MemoryLimitExceeded",
    "LoaderFailed",
    "ShuttingDown",
    "NotReady",
    "QuorumNotReached",
    "VersionMismatch",
    "OperationRefused",
    "BulkOperationError",
    "PeerUnavailable",
    "PeerTimeout",
    "AuthenticationError",
    "ProtocolError",
    "ClockDriftExceeded",
    "ConfigError",
    "BackendNotInstalled",
    "__version__",
]
