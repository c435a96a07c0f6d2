"""Node configuration: :class:`Options` and its ``network``, ``storage`` and ``log`` sections.

Field names are the snake_case keys of GridKV's JSON configuration, so a configuration file
written for GridKV loads unchanged through :func:`gridkv.load_config`. Every field is checked
when an options object is built, whether from keyword arguments or from a file: an unknown key
or a bad value raises :class:`~gridkv.base.errors.ConfigError` naming the key (``network.timeout``)
and the value. Durations accept Go-style strings ("250ms", "5m", "1h30m"), numbers of seconds or
:class:`~datetime.timedelta` and are stored as float seconds.

The defaults, their units and their reasons are listed in ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from gridkv.base._repr import shown
from gridkv.base.consistency import CONSISTENCY_LEVELS, Consistency
from gridkv.base.durations import parse_duration
from gridkv.base.errors import ConfigError

__all__ = [
    "Options",
    "NetworkOptions",
    "StorageOptions",
    "LogOptions",
    "MembershipOptions",
    "SslOptions",
    "Consistency",
    "CONSISTENCY_LEVELS",
]


def _spec(kind: str, **rules: Any) -> dict[str, Any]:
    return {"kind": kind, **rules}


def _opt(default: Any, kind: str, **rules: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=_spec(kind, **rules))
    return field(default=default, metadata=_spec(kind, **rules))


def _coerce(path: str, value: Any, spec: Mapping[str, Any]) -> Any:
    """Check and convert one field's value; raise ConfigError naming ``path`` when it is bad."""
    kind = spec["kind"]

    def bad(why: str) -> ConfigError:
        return ConfigError(f"config key {path!r}: {why} (got {shown(value)})")

    if kind == "duration":
        try:
            out: Any = parse_duration(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad("expected an integer")
        out = value
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number")
        try:
            out = float(value)
        except OverflowError:  # an int beyond the float range
            raise bad("expected a finite number") from None
        if not math.isfinite(out):
            raise bad("expected a finite number")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad("expected true or false")
        out = value
    elif kind == "str":
        if not isinstance(value, str):
            raise bad("expected a string")
        out = value
    elif kind == "optional_str":
        if value is not None and not isinstance(value, str):
            raise bad("expected a string or null")
        out = value
    elif kind == "str_list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("expected a list of strings")
        out = list(value)
    else:  # pragma: no cover - a programming error in this module
        raise AssertionError(f"unknown option kind {kind!r}")
    if "choices" in spec and out not in spec["choices"]:
        raise bad(f"expected one of {', '.join(repr(c) for c in spec['choices'])}")
    if "min" in spec and out < spec["min"]:
        raise bad(f"must be at least {spec['min']}")
    if "max" in spec and out > spec["max"]:
        raise bad(f"must be at most {spec['max']}")
    if spec.get("nonempty") and not out:
        raise bad("must not be empty")
    if "max_len" in spec and len(out) > spec["max_len"]:
        raise bad(f"must be at most {spec['max_len']} characters")
    return out


class _Section:
    """Shared checking and loading for the option dataclasses."""

    _path: ClassVar[str] = ""
    _sections: ClassVar[dict[str, type[_Section]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            path = f"{self._path}{f.name}"
            section = self._sections.get(f.name)
            if section is not None:
                if isinstance(value, Mapping):
                    value = section.from_mapping(value)
                elif value is None:
                    value = section()
                elif not isinstance(value, section):
                    raise ConfigError(
                        f"config key {path!r}: expected a mapping of options (got {shown(value)})"
                    )
            else:
                value = _coerce(path, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks; subclasses extend."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build the section from a mapping with its configuration keys.

        :raises ConfigError: a key is unknown or a value is bad; the message names the key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config section {cls._path.rstrip('.') or '<root>'!r}: expected a mapping, "
                f"got {shown(data)}"
            )
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                # shown(), not str(): a key may be any value, an int too long to print too.
                name = key if isinstance(key, str) else shown(key)
                hint = _closest(name, names)
                raise ConfigError(
                    f"unknown config key {cls._path + name!r}"
                    + (f"; did you mean {cls._path + hint!r}?" if hint else "")
                )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Return the section as plain data with configuration keys (durations in seconds)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Section) else value
        return out


def _check_address(key: str, address: str, *, listening: bool) -> None:
    """Raise unless ``address`` is ``host:port`` (``[v6]:port``); port 0 only where listening.

    Every transport addresses nodes this way (the memory transport takes any host name), so a
    seed without a port is caught when the options are built, not at the first dial.
    """
    host, sep, port = address.rpartition(":")
    low = 0 if listening else 1
    # isascii(): str.isdigit() also accepts digits int() refuses (superscripts) or reads
    # (Arabic-Indic), which no resolver takes as a port.
    if not sep or not (port.isascii() and port.isdigit()) or not low <= int(port) <= 65535:
        raise ConfigError(
            f"config key {key!r}: expected host:port with a port from {low} to 65535 "
            f"(got {address!r})"
        )
    if not host and not listening:
        raise ConfigError(
            f"config key {key!r}: expected host:port, the host is missing (got {address!r})"
        )


def _closest(key: str, names: set[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class SslOptions(_Section):
    """The ``network.ssl`` section: TLS between nodes (transports that support it).

    With ``enabled`` every connection is TLS 1.2 or later. Each node presents ``cert_file``
    (with ``key_file``) both when it accepts and when it dials, and with ``verify_peer`` each
    side checks the other's certificate against ``ca_file``: mutual TLS, so only nodes holding a
    certificate from the cluster's CA can connect.
    """

    _path: ClassVar[str] = "network.ssl."

    #: Use TLS on every connection between nodes.
    enabled: bool = _opt(False, "bool")
    #: PEM file with this node's certificate (and its chain).
    cert_file: str = _opt("", "str")
    #: PEM file with the certificate's private key; empty when it is in ``cert_file``.
    key_file: str = _opt("", "str")
    #: PEM file with the CA certificates peers' certificates must chain to; empty trusts the
    #: system's default CAs.
    ca_file: str = _opt("", "str")
    #: Require and verify the peer's certificate, in both directions.
    verify_peer: bool = _opt(True, "bool")
    #: Also check that a dialled peer's certificate names the host of its address (a DNS name
    #: or IP address in subjectAltName).
    check_hostname: bool = _opt(True, "bool")

    def _check(self) -> None:
        if not self.enabled:
            return
        if not self.cert_file:
            raise ConfigError(
                "config key 'network.ssl.cert_file': TLS is enabled and needs this node's "
                "certificate (every node presents one, accepting and dialling)"
            )
        if self.check_hostname and not self.verify_peer:
            raise ConfigError(
                "config key 'network.ssl.check_hostname': needs network.ssl.verify_peer = true"
            )


@dataclass(frozen=True, slots=True)
class NetworkOptions(_Section):
    """The ``network`` section: which transport to use and its limits."""

    _path: ClassVar[str] = "network."
    _sections: ClassVar[dict[str, type[_Section]]] = {"ssl": SslOptions}

    #: Transport plugin name ("memory", "tcp", "quic"). ``None`` picks "tcp" when
    #: gridkv-transport-tcp is installed and "memory" otherwise.
    type: str | None = _opt(None, "optional_str")
    #: Address to listen on when it differs from the advertised ``local_address`` (NAT,
    #: containers, 0.0.0.0). Empty means "listen on local_address".
    bind_addr: str = _opt("", "str")
    #: Idle connections kept per peer.
    max_idle: int = _opt(4, "int", min=0)
    #: Connections opened per peer at most.
    max_conns: int = _opt(16, "int", min=1)
    #: Time allowed to open a connection.
    timeout: float = _opt(3.0, "duration")
    #: Time allowed for a peer's answer to a request.
    read_timeout: float = _opt(2.0, "duration")
    #: Time allowed to hand a frame to the peer (blocked writes count).
    write_timeout: float = _opt(2.0, "duration")
    #: Largest frame sent or accepted, in bytes; checked before anything is allocated.
    max_frame_bytes: int = _opt(16 * 1024 * 1024, "int", min=1024)
    #: First wait before dialling a peer again after a failed dial; it doubles with each
    #: further failure (with jitter) up to ``reconnect_max_backoff``. Meanwhile sends to that
    #: peer fail at once with PeerUnavailable instead of waiting on a dial.
    reconnect_backoff: float = _opt(0.05, "duration", min=0.0)
    #: Longest wait between dials to an unreachable peer.
    reconnect_max_backoff: float = _opt(1.0, "duration", min=0.0)
    #: Bytes queued on one connection that the peer has not read yet. A peer that lets more
    #: pile up, or that takes nothing for ``write_timeout`` while data waits, is disconnected
    #: (Redis's client-output-buffer-limit), so a peer that never reads cannot grow the node.
    max_output_buffer_bytes: int = _opt(64 * 1024 * 1024, "int", min=64 * 1024)
    #: Bytes of unfinished inbound frames buffered across all of this node's connections at
    #: once; a connection whose partial frame would pass it is closed. One connection never
    #: buffers more than one frame (``max_frame_bytes``).
    max_inbound_buffer_bytes: int = _opt(64 * 1024 * 1024, "int", min=1024)
    #: TLS between nodes.
    ssl: SslOptions = field(default_factory=SslOptions)

    def _check(self) -> None:
        if self.max_inbound_buffer_bytes < self.max_frame_bytes:
            raise ConfigError(
                f"config key 'network.max_inbound_buffer_bytes': {self.max_inbound_buffer_bytes}"
                f" cannot hold one frame of network.max_frame_bytes={self.max_frame_bytes}; "
                "raise it or lower network.max_frame_bytes"
            )
        if self.max_output_buffer_bytes < self.max_frame_bytes:
            raise ConfigError(
                f"config key 'network.max_output_buffer_bytes': {self.max_output_buffer_bytes}"
                f" cannot hold one frame of network.max_frame_bytes={self.max_frame_bytes}; "
                "raise it or lower network.max_frame_bytes"
            )


@dataclass(frozen=True, slots=True)
class StorageOptions(_Section):
    """The ``storage`` section: the local storage backend and its limits."""

    _path: ClassVar[str] = "storage."

    #: Storage plugin name.
    backend: str = _opt("memory", "str", nonempty=True)
    #: Memory the stored entries may use, in MiB; 0 means no limit.
    max_memory_mb: int = _opt(1024, "int", min=0)
    #: Shards, each with its own lock; partitions are spread over them.
    shard_count: int = _opt(32, "int", min=1, max=4096)
    #: "none" raises MemoryLimitExceeded when full; "lru" evicts least-recently-used entries.
    eviction: str = _opt("none", "str", choices=("none", "lru"))
    #: Values at least this long are lz4-compressed when that saves space; 0 turns it off.
    compression_threshold: int = _opt(1024, "int", min=0)
    #: How often the background sweep removes expired entries and old tombstones.
    expiry_interval: float = _opt(1.0, "duration", min=0.001)


@dataclass(frozen=True, slots=True)
class MembershipOptions(_Section):
    """The ``membership`` section: the failure detector's finer settings.

    The main timings are top-level keys: ``gossip_interval`` (probe period),
    ``failure_timeout`` (probe to suspicion) and ``suspect_timeout`` (shortest suspicion).
    """

    _path: ClassVar[str] = "membership."

    #: Membership plugin name.
    protocol: str = _opt("swim", "str", nonempty=True)
    #: Time a direct probe waits for its ack before members are asked to probe indirectly.
    probe_timeout: float = _opt(0.1, "duration", min=0.001)
    #: A suspicion starts at this multiple of its shortest length and shrinks with each
    #: independent confirmation (Lifeguard).
    suspicion_max_mult: float = _opt(2.5, "float", min=1.0)
    #: Members asked to probe a member that did not answer directly.
    indirect_checks: int = _opt(3, "int", min=0, max=16)
    #: Each update is sent retransmit_mult * ceil(log10(n + 1)) times by each node.
    retransmit_mult: int = _opt(4, "int", min=1, max=64)
    #: Random members updates are pushed to every gossip_interval.
    gossip_fanout: int = _opt(2, "int", min=0, max=16)
    #: Member records carried by one message at most.
    max_piggyback: int = _opt(16, "int", min=1, max=1024)
    #: Period of full state syncs with one random live member.
    push_pull_interval: float = _opt(10.0, "duration", min=0.01)
    #: Period of full state syncs with one random member held dead (heals partitions).
    reconnect_interval: float = _opt(1.0, "duration", min=0.01)
    #: Highest local health score; timeouts stretch up to awareness_max + 1 times.
    awareness_max: int = _opt(8, "int", min=0, max=64)
    #: How long a dead or departed member's record is kept to refuse stale gossip.
    dead_retention: float = _opt(3600.0, "duration", min=1.0)


@dataclass(frozen=True, slots=True)
class LogOptions(_Section):
    """The ``log`` section: how GridKV's ``logging`` output looks."""

    _path: ClassVar[str] = "log."

    #: Level of the "gridkv" logger.
    level: str = _opt(
        "info", "str", choices=("debug", "info", "warn", "warning", "error", "critical")
    )
    #: "text" for people, "json" for log pipelines (one JSON object a line).
    format: str = _opt("text", "str", choices=("text", "json"))
    #: strftime format of the time stamp.
    time_format: str = _opt("%Y-%m-%dT%H:%M:%S%z", "str", nonempty=True)
    #: Leave out the module:line of the call that logged.
    no_caller: bool = _opt(False, "bool")
    #: Leave out the time stamp (useful under systemd or Kubernetes, which add their own).
    no_time: bool = _opt(False, "bool")


@dataclass(frozen=True, slots=True)
class Options(_Section):
    """Everything that configures one node; see ``docs/configuration.md`` for each field."""

    _path: ClassVar[str] = ""
    _sections: ClassVar[dict[str, type[_Section]]] = {
        "network": NetworkOptions,
        "storage": StorageOptions,
        "membership": MembershipOptions,
        "log": LogOptions,
    }

    #: Stable identity of this node; a restarted node keeps it. Empty picks "<host>-<pid>".
    local_node_id: str = _opt("", "str", max_len=255)
    #: Address other nodes reach this node at ("host:port"; any string for "memory").
    local_address: str = _opt("127.0.0.1:7946", "str", nonempty=True)
    #: Addresses of nodes to join through.
    seed_addrs: list[str] = _opt([], "str_list")
    #: Nodes that hold each key.
    replica_count: int = _opt(3, "int", min=1, max=16)
    #: Points each node takes on the hash ring.
    virtual_nodes: int = _opt(150, "int", min=1, max=4096)
    #: Number of partitions keys are spread over; fixed for the life of a cluster.
    partition_count: int = _opt(1024, "int", min=1, max=65536)
    #: Default time-to-live of a written key; 0 means keys never expire.
    ttl: float = _opt(0.0, "duration")
    #: How long a non-owner keeps a value it read in its hot read cache.
    hot_read_cache_ttl: float = _opt(1.0, "duration")
    #: Entries a non-owner's hot read cache holds at most; 0 turns it off.
    hot_cache_size: int = _opt(10_000, "int", min=0)
    #: Read repairs started per second at most.
    read_repair_rate_limit_per_sec: int = _opt(1000, "int", min=0)
    #: How long a probe waits for an answer before the member is suspected.
    failure_timeout: float = _opt(0.3, "duration", min=0.001)
    #: How long a suspected member has to refute before it is declared dead.
    suspect_timeout: float = _opt(0.5, "duration", min=0.001)
    #: Period of failure-detection probes and gossip.
    gossip_interval: float = _opt(0.1, "duration", min=0.001)
    #: Time allowed for replicas to acknowledge a quorum or all write.
    replication_timeout: float = _opt(2.0, "duration", min=0.001)
    #: Time allowed for a read that has to ask other nodes.
    read_timeout: float = _opt(1.0, "duration", min=0.001)
    #: After start, time during which the node is not declared unhealthy for lacking peers.
    startup_grace_period: float = _opt(2.0, "duration")
    #: Turn off peer authentication. Needed, explicitly, until authentication is available.
    disable_auth: bool = _opt(False, "bool")
    #: Replication entries per batch that send it at once.
    batch_threshold: int = _opt(100, "int", min=1)
    #: Longest a replication entry waits for its batch to fill.
    batch_window: float = _opt(0.005, "duration")
    #: Period of anti-entropy rounds, in which co-replicas compare partition digests.
    anti_entropy_interval: float = _opt(1.0, "duration", min=0.01)
    #: Keys compared or exchanged with each peer per anti-entropy round at most (bounds the
    #: bandwidth a round can take).
    anti_entropy_keys_per_round: int = _opt(200_000, "int", min=1)
    #: Consistency level of calls that do not name one: "one", "quorum" or "all".
    consistency: str = _opt("one", "str", choices=CONSISTENCY_LEVELS)
    #: Longest key, in UTF-8 bytes.
    max_key_bytes: int = _opt(1024, "int", min=1, max=65535)
    #: Longest value, in bytes.
    max_value_bytes: int = _opt(4 * 1024 * 1024, "int", min=1)
    #: How far ahead of this node's clock a peer's clock may be before its messages are refused.
    max_clock_drift: float = _opt(10.0, "duration", min=0.001)
    #: The shortest time a delete's tombstone is kept so the delete wins over stale copies;
    #: afterwards it goes once every replica holds it (see docs/replication.md).
    tombstone_ttl: float = _opt(3600.0, "duration", min=0.001)
    #: How long a node keeps handing a partition it no longer replicates to the new replicas
    #: (and a new replica keeps asking the former ones for keys not arrived yet); afterwards
    #: the giver drops the values it could not give (tombstones it keeps giving). Tombstones
    #: are collected only after the view has been stable for twice this long.
    handoff_timeout: float = _opt(30.0, "duration", min=0.01)
    #: Transport settings.
    network: NetworkOptions = field(default_factory=NetworkOptions)
    #: Storage settings.
    storage: StorageOptions = field(default_factory=StorageOptions)
    #: Failure detector settings.
    membership: MembershipOptions = field(default_factory=MembershipOptions)
    #: Logging settings.
    log: LogOptions = field(default_factory=LogOptions)

    def _check(self) -> None:
        if not self.local_node_id:
            object.__setattr__(self, "local_node_id", f"{socket.gethostname()}-{os.getpid()}")
        _check_address("local_address", self.local_address, listening=True)
        if self.network.bind_addr:
            _check_address("network.bind_addr", self.network.bind_addr, listening=True)
        for i, seed in enumerate(self.seed_addrs):
            _check_address(f"seed_addrs[{i}]", seed, listening=False)
        if self.max_value_bytes + self.max_key_bytes + 1024 > self.network.max_frame_bytes:
            raise ConfigError(
                f"config key 'max_value_bytes': {self.max_value_bytes} does not fit in a frame "
                f"of network.max_frame_bytes={self.network.max_frame_bytes}; raise "
                "network.max_frame_bytes or lower max_value_bytes"
            )
        if self.membership.probe_timeout > self.failure_timeout:
            raise ConfigError(
                f"config key 'membership.probe_timeout': {self.membership.probe_timeout}s is "
                f"longer than failure_timeout={self.failure_timeout}s, which includes it"
            )
        if self.storage.max_memory_mb and self.max_value_bytes > self.storage.max_memory_mb << 20:
            raise ConfigError(
                f"config key 'max_value_bytes': {self.max_value_bytes} exceeds "
                f"storage.max_memory_mb={self.storage.max_memory_mb} MiB"
            )

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied (nested sections accept mappings)."""
        data = self.to_dict()
        for key, value in changes.items():
            if key in self._sections and isinstance(value, Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Options.from_mapping(data)

    @property
    def bind_address(self) -> str:
        """The address to listen on: ``network.bind_addr`` or else ``local_address``."""
        return self.network.bind_addr or self.local_address
