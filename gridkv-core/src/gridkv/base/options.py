"""Node configuration: :class:`Options` and its sections (``network``, ``storage``, ``auth``...).

Field names are the snake_case keys of GridKV's JSON configuration, so a configuration file
written for GridKV loads unchanged through :func:`gridkv.load_config`. Every field is checked
when an options object is built, whether from keyword arguments or from a file: an unknown key
or a bad value raises :class:`~gridkv.base.errors.ConfigError` naming the key (``network.timeout``)
and the value. Durations accept Go-style strings ("250ms", "5m", "1h30m"), numbers of seconds or
:class:`~datetime.timedelta` and are stored as float seconds.

The defaults, their units and their reasons are listed in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gridkv.base.consistency import CONSISTENCY_LEVELS, Consistency
from gridkv.base.errors import ConfigError
from gridkv.base.sections import Section, check_address, dns_seed, option

__all__ = [
    "Options",
    "NetworkOptions",
    "StorageOptions",
    "LogOptions",
    "MembershipOptions",
    "SslOptions",
    "AuthOptions",
    "MetricsOptions",
    "RespOptions",
    "HealthOptions",
    "Consistency",
    "CONSISTENCY_LEVELS",
]


@dataclass(frozen=True, slots=True)
class SslOptions(Section):
    """The ``network.ssl`` section: TLS between nodes (transports that support it).

    With ``enabled`` every connection is TLS 1.2 or later. Each node presents ``cert_file``
    (with ``key_file``) both when it accepts and when it dials, and with ``verify_peer`` each
    side checks the other's certificate against ``ca_file``: mutual TLS, so only nodes holding a
    certificate from the cluster's CA can connect.
    """

    _path: ClassVar[str] = "network.ssl."

    #: Use TLS on every connection between nodes.
    enabled: bool = option(False, "bool")
    #: PEM file with this node's certificate (and its chain).
    cert_file: str = option("", "str")
    #: PEM file with the certificate's private key; empty when it is in ``cert_file``.
    key_file: str = option("", "str")
    #: PEM file with the CA certificates peers' certificates must chain to; empty trusts the
    #: system's default CAs.
    ca_file: str = option("", "str")
    #: Require and verify the peer's certificate, in both directions.
    verify_peer: bool = option(True, "bool")
    #: Also check that a dialled peer's certificate names the host of its address (a DNS name
    #: or IP address in subjectAltName).
    check_hostname: bool = option(True, "bool")

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
class NetworkOptions(Section):
    """The ``network`` section: which transport to use and its limits."""

    _path: ClassVar[str] = "network."
    _sections: ClassVar[dict[str, type[Section]]] = {"ssl": SslOptions}

    #: Transport plugin name ("memory", "tcp", "quic"). ``None`` picks "tcp" when
    #: gridkv-transport-tcp is installed and "memory" otherwise.
    type: str | None = option(None, "optional_str")
    #: Address to listen on when it differs from the advertised ``local_address`` (NAT,
    #: containers, 0.0.0.0). Empty means "listen on local_address".
    bind_addr: str = option("", "str")
    #: Idle connections kept per peer.
    max_idle: int = option(4, "int", min=0)
    #: Connections opened per peer at most.
    max_conns: int = option(16, "int", min=1)
    #: Time allowed to open a connection.
    timeout: float = option(3.0, "duration")
    #: Time allowed for a peer's answer to a request.
    read_timeout: float = option(2.0, "duration")
    #: Time allowed to hand a frame to the peer (blocked writes count).
    write_timeout: float = option(2.0, "duration")
    #: Largest frame sent or accepted, in bytes; checked before anything is allocated.
    max_frame_bytes: int = option(16 * 1024 * 1024, "int", min=1024)
    #: First wait before dialling a peer again after a failed dial; it doubles with each
    #: further failure (with jitter) up to ``reconnect_max_backoff``. Meanwhile sends to that
    #: peer fail at once with PeerUnavailable instead of waiting on a dial.
    reconnect_backoff: float = option(0.05, "duration", min=0.0)
    #: Longest wait between dials to an unreachable peer.
    reconnect_max_backoff: float = option(1.0, "duration", min=0.0)
    #: Bytes queued on one connection that the peer has not read yet. A peer that lets more
    #: pile up, or that takes nothing for ``write_timeout`` while data waits, is disconnected
    #: (Redis's client-output-buffer-limit), so a peer that never reads cannot grow the node.
    max_output_buffer_bytes: int = option(64 * 1024 * 1024, "int", min=64 * 1024)
    #: Bytes of unfinished inbound frames buffered across all of this node's connections at
    #: once; a connection whose partial frame would pass it is closed. One connection never
    #: buffers more than one frame (``max_frame_bytes``).
    max_inbound_buffer_bytes: int = option(64 * 1024 * 1024, "int", min=1024)
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
class StorageOptions(Section):
    """The ``storage`` section: the local storage backend and its limits."""

    _path: ClassVar[str] = "storage."

    #: Storage plugin name.
    backend: str = option("memory", "str", nonempty=True)
    #: Memory the stored entries may use, in MiB; 0 means no limit.
    max_memory_mb: int = option(1024, "int", min=0)
    #: Shards, each with its own lock; partitions are spread over them.
    shard_count: int = option(32, "int", min=1, max=4096)
    #: "none" raises MemoryLimitExceeded when full; "lru" evicts least-recently-used entries.
    eviction: str = option("none", "str", choices=("none", "lru"))
    #: Values at least this long are lz4-compressed when that saves space; 0 turns it off.
    compression_threshold: int = option(1024, "int", min=0)
    #: How often the background sweep removes expired entries and old tombstones.
    expiry_interval: float = option(1.0, "duration", min=0.001)


@dataclass(frozen=True, slots=True)
class MembershipOptions(Section):
    """The ``membership`` section: the failure detector's finer settings.

    The main timings are top-level keys: ``gossip_interval`` (probe period),
    ``failure_timeout`` (probe to suspicion) and ``suspect_timeout`` (shortest suspicion).
    """

    _path: ClassVar[str] = "membership."

    #: Membership plugin name.
    protocol: str = option("swim", "str", nonempty=True)
    #: Time a direct probe waits for its ack before members are asked to probe indirectly.
    probe_timeout: float = option(0.1, "duration", min=0.001)
    #: A suspicion starts at this multiple of its shortest length and shrinks with each
    #: independent confirmation (Lifeguard).
    suspicion_max_mult: float = option(2.5, "float", min=1.0)
    #: Members asked to probe a member that did not answer directly.
    indirect_checks: int = option(3, "int", min=0, max=16)
    #: Each update is sent retransmit_mult * ceil(log10(n + 1)) times by each node.
    retransmit_mult: int = option(4, "int", min=1, max=64)
    #: Random members updates are pushed to every gossip_interval.
    gossip_fanout: int = option(2, "int", min=0, max=16)
    #: Member records carried by one message at most.
    max_piggyback: int = option(16, "int", min=1, max=1024)
    #: Period of full state syncs with one random live member.
    push_pull_interval: float = option(10.0, "duration", min=0.01)
    #: Period of full state syncs with one random member held dead (heals partitions).
    reconnect_interval: float = option(1.0, "duration", min=0.01)
    #: Highest local health score; timeouts stretch up to awareness_max + 1 times.
    awareness_max: int = option(8, "int", min=0, max=64)
    #: How long a dead or departed member's record is kept to refuse stale gossip.
    dead_retention: float = option(3600.0, "duration", min=1.0)


@dataclass(frozen=True, slots=True)
class AuthOptions(Section):
    """The ``auth`` section: this node's identity and the trust root its peers must chain to.

    Each node has an Ed25519 key pair: ``key`` (inline) or ``key_file`` (made on first start,
    mode 0600); with neither, a fresh key each start (enough under a cluster secret or a CA,
    not under an allow-list, which names keys). One trust root decides who may join:
    ``cluster_secret`` or ``cluster_secret_file`` (holders of the secret), ``trusted_keys``
    (a file binding node ids to public keys, reloaded when it changes) or ``ca_file`` (node
    certificates, ``cert_file``, whose subject is the node id). See ``docs/security.md``.
    """

    _path: ClassVar[str] = "auth."

    #: This node's Ed25519 private key, inline: as ``gridkv keys new --pair`` prints it, or PEM.
    key: str = option("", "str")
    #: File of this node's Ed25519 private key (PEM); created, mode 0600, when missing.
    key_file: str = option("", "str")
    #: The cluster secret, as ``gridkv keys new`` prints it (32 random bytes, base64).
    cluster_secret: str = option("", "str")
    #: File holding the cluster secret (mode 0600 or stricter).
    cluster_secret_file: str = option("", "str")
    #: File of trusted keys: a line ``<node id> <public key>`` per member; ``#`` comments.
    trusted_keys: str = option("", "str")
    #: PEM file with the cluster CA's certificate.
    ca_file: str = option("", "str")
    #: PEM file with this node's certificate from the cluster CA (subject: its node id).
    cert_file: str = option("", "str")
    #: Encrypt messages between nodes (AEAD) instead of only authenticating them.
    encrypt: bool = option(False, "bool")
    #: The authenticator plugin: the built-in "ed25519", or one a plugin registers (which
    #: then brings its own identity and trust root; the keys above are ed25519's).
    authenticator: str = option("ed25519", "str", nonempty=True, max_len=100)

    def _roots(self) -> list[tuple[str, str]]:
        """The trust roots given: (name, config key) of each, in order of precedence."""
        return [
            (name, key)
            for name, key, given in (
                ("secret", "auth.cluster_secret", self.cluster_secret or self.cluster_secret_file),
                ("keys", "auth.trusted_keys", self.trusted_keys),
                ("ca", "auth.ca_file", self.ca_file),
            )
            if given
        ]

    @property
    def trust_root(self) -> str | None:
        """The trust root configured: "secret", "keys", "ca", or ``None`` for none."""
        roots = self._roots()
        return roots[0][0] if roots else None

    def _check(self) -> None:
        if self.key and self.key_file:
            raise ConfigError(
                "config key 'auth.key': give this node's key inline or in auth.key_file, not both"
            )
        if self.cluster_secret and self.cluster_secret_file:
            raise ConfigError(
                "config key 'auth.cluster_secret': give the secret inline or in "
                "auth.cluster_secret_file, not both"
            )
        given = [key for _, key in self._roots()]
        if len(given) > 1:
            raise ConfigError(
                f"config key {given[1]!r}: one trust root at a time, and {given[0]} is set too"
            )
        if self.ca_file and not self.cert_file:
            raise ConfigError(
                "config key 'auth.cert_file': a CA trust root (auth.ca_file) needs this node's "
                "certificate from it (gridkv certs create makes both)"
            )
        if self.cert_file and not self.ca_file:
            raise ConfigError("config key 'auth.cert_file': needs auth.ca_file, the CA it is from")


@dataclass(frozen=True, slots=True)
class LogOptions(Section):
    """The ``log`` section: how GridKV's ``logging`` output looks."""

    _path: ClassVar[str] = "log."

    #: Level of the "gridkv" logger.
    level: str = option(
        "info", "str", choices=("debug", "info", "warn", "warning", "error", "critical")
    )
    #: "text" for people, "json" for log pipelines (one JSON object a line).
    format: str = option("text", "str", choices=("text", "json"))
    #: strftime format of the time stamp.
    time_format: str = option("%Y-%m-%dT%H:%M:%S%z", "str", nonempty=True)
    #: Leave out the module:line of the call that logged.
    no_caller: bool = option(False, "bool")
    #: Leave out the time stamp (useful under systemd or Kubernetes, which add their own).
    no_time: bool = option(False, "bool")


@dataclass(frozen=True, slots=True)
class MetricsOptions(Section):
    """The ``metrics`` section: where the node's metrics are exported (gridkv-metrics).

    With neither address set, the node records into the application's OpenTelemetry SDK, if
    it configured one (see ``docs/metrics.md``). Setting one needs the gridkv-metrics
    distribution installed.
    """

    _path: ClassVar[str] = "metrics."

    #: Serve Prometheus text on ``http://<this address>/metrics`` ("host:port"; empty: off).
    prometheus_addr: str = option("", "str")
    #: Export OTLP over HTTP to this URL (``http://collector:4318/v1/metrics``; empty: off).
    otlp_endpoint: str = option("", "str")
    #: How often metrics are exported over OTLP.
    interval: float = option(10.0, "duration", min=0.1, max=86400.0)
    #: The cluster's name, the ``service.namespace`` resource attribute of the exported
    #: metrics (empty: the one ``OTEL_RESOURCE_ATTRIBUTES`` sets, else "gridkv").
    cluster: str = option("", "str", max_len=255)

    def _check(self) -> None:
        if self.prometheus_addr:
            check_address("metrics.prometheus_addr", self.prometheus_addr, listening=True)
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                "config key 'metrics.otlp_endpoint': an http:// or https:// URL, such as "
                f"http://collector:4318/v1/metrics (got {self.otlp_endpoint!r})"
            )

    @property
    def exported(self) -> bool:
        """Whether an exporter is asked for."""
        return bool(self.prometheus_addr or self.otlp_endpoint)


@dataclass(frozen=True, slots=True)
class RespOptions(Section):
    """The ``resp`` section: the Redis-protocol door of ``gridkv node`` (see ``docs/resp.md``)."""

    _path: ClassVar[str] = "resp."

    #: Serve RESP2/RESP3 on this address ("host:port"; empty: no door).
    listen: str = option("", "str")
    #: Password of the default user (AUTH password); empty: no password.
    password: str = option("", "str")
    #: Further users, each "name:password" (AUTH name password).
    users: list[str] = option([], "str_list")
    #: Clients connected at once at most; more are refused with Redis's error.
    max_clients: int = option(10_000, "int", min=1)
    #: Bytes of one client's unparsed input at most (Redis's client-query-buffer-limit).
    max_query_bytes: int = option(64 * 1024 * 1024, "int", min=1024)
    #: Arguments of one command at most.
    max_args: int = option(1024 * 1024, "int", min=3)
    #: Bytes of answers queued to one client that does not read, at most; then it is closed.
    max_output_bytes: int = option(64 * 1024 * 1024, "int", min=1024)
    #: Consistency level of the door's reads and writes ("" uses the node's ``consistency``).
    consistency: str = option("", "str", choices=("", *CONSISTENCY_LEVELS))

    def _check(self) -> None:
        if self.listen:
            check_address("resp.listen", self.listen, listening=True)
        for i, user in enumerate(self.users):
            name, sep, password = user.partition(":")
            if not sep or not name or not password or name == "default":
                raise ConfigError(
                    f"config key 'resp.users[{i}]': expected name:password with both set and a "
                    "name other than 'default' (resp.password is the default user's)"
                )


@dataclass(frozen=True, slots=True)
class HealthOptions(Section):
    """The ``health`` section: HTTP liveness and readiness probes of ``gridkv node``."""

    _path: ClassVar[str] = "health."

    #: Serve ``/livez`` and ``/readyz`` over HTTP on this address ("host:port"; empty: off).
    listen: str = option("", "str")

    def _check(self) -> None:
        if self.listen:
            check_address("health.listen", self.listen, listening=True)


@dataclass(frozen=True, slots=True)
class Options(Section):
    """Everything that configures one node; see ``docs/configuration.md`` for each field."""

    _path: ClassVar[str] = ""
    _sections: ClassVar[dict[str, type[Section]]] = {
        "network": NetworkOptions,
        "storage": StorageOptions,
        "membership": MembershipOptions,
        "auth": AuthOptions,
        "log": LogOptions,
        "metrics": MetricsOptions,
        "resp": RespOptions,
        "health": HealthOptions,
    }

    #: Stable identity of this node; a restarted node keeps it. Empty picks "<host>-<pid>".
    local_node_id: str = option("", "str", max_len=255)
    #: Address other nodes reach this node at ("host:port"; any string for "memory").
    local_address: str = option("127.0.0.1:7946", "str", nonempty=True)
    #: Addresses of nodes to join through: ``host:port``, or ``dns:HOST:PORT`` for every
    #: A/AAAA record of HOST (resolved again before each join attempt).
    seed_addrs: list[str] = option([], "str_list")
    #: Nodes that hold each key.
    replica_count: int = option(3, "int", min=1, max=16)
    #: Points each node takes on the hash ring.
    virtual_nodes: int = option(150, "int", min=1, max=4096)
    #: Number of partitions keys are spread over; fixed for the life of a cluster.
    partition_count: int = option(1024, "int", min=1, max=65536)
    #: Default time-to-live of a written key; 0 means keys never expire.
    ttl: float = option(0.0, "duration")
    #: How long a non-owner keeps a value it read in its hot read cache.
    hot_read_cache_ttl: float = option(1.0, "duration")
    #: Entries a non-owner's hot read cache holds at most; 0 turns it off.
    hot_cache_size: int = option(10_000, "int", min=0)
    #: How long a non-owner keeps a value in its near cache when the replica that answered
    #: watches the key for it (and tells it when the key changes); 0 turns watching off, and
    #: answers are kept for hot_read_cache_ttl only.
    near_cache_ttl: float = option(30.0, "duration", max=86400.0)
    #: Watches a node keeps for other nodes' near caches at most; past it, the oldest are
    #: dropped with an invalidation, so no near cache keeps what nobody watches.
    near_cache_watches: int = option(100_000, "int", min=0)
    #: Read repairs started per second at most.
    read_repair_rate_limit_per_sec: int = option(1000, "int", min=0)
    #: How long a probe waits for an answer before the member is suspected.
    failure_timeout: float = option(0.3, "duration", min=0.001)
    #: How long a suspected member has to refute before it is declared dead.
    suspect_timeout: float = option(0.5, "duration", min=0.001)
    #: Period of failure-detection probes and gossip.
    gossip_interval: float = option(0.1, "duration", min=0.001)
    #: Time allowed for replicas to acknowledge a quorum or all write.
    replication_timeout: float = option(2.0, "duration", min=0.001)
    #: Time allowed for a read that has to ask other nodes.
    read_timeout: float = option(1.0, "duration", min=0.001)
    #: After start, time during which the node is not declared unhealthy for lacking peers.
    startup_grace_period: float = option(2.0, "duration")
    #: Turn off peer authentication (a warning is logged at start).
    disable_auth: bool = option(False, "bool")
    #: Replication entries per batch that send it at once.
    batch_threshold: int = option(100, "int", min=1)
    #: Longest a replication entry waits for its batch to fill.
    batch_window: float = option(0.005, "duration")
    #: Bytes of replication entries queued or in flight to one replica at most; a writer that
    #: would add more waits for them to drain (up to replication_timeout), then fails.
    replication_backlog_bytes: int = option(64 * 1024 * 1024, "int", min=1024)
    #: Period of anti-entropy rounds, in which co-replicas compare partition digests.
    anti_entropy_interval: float = option(1.0, "duration", min=0.01)
    #: Keys compared or exchanged with each peer per anti-entropy round at most (bounds the
    #: bandwidth a round can take).
    anti_entropy_keys_per_round: int = option(200_000, "int", min=1)
    #: Consistency level of calls that do not name one: "one", "quorum" or "all".
    consistency: str = option("one", "str", choices=CONSISTENCY_LEVELS)
    #: Longest key, in UTF-8 bytes.
    max_key_bytes: int = option(1024, "int", min=1, max=65535)
    #: Longest value, in bytes.
    max_value_bytes: int = option(4 * 1024 * 1024, "int", min=1)
    #: How far ahead of this node's clock a peer's clock may be before its messages are refused.
    max_clock_drift: float = option(10.0, "duration", min=0.001)
    #: The shortest time a delete's tombstone is kept so the delete wins over stale copies;
    #: afterwards it goes once every replica holds it (see docs/replication.md).
    tombstone_ttl: float = option(3600.0, "duration", min=0.001)
    #: How long a node keeps handing a partition it no longer replicates to the new replicas
    #: (and a new replica keeps asking the former ones for keys not arrived yet); afterwards
    #: the giver drops the values it could not give (tombstones it keeps giving). Tombstones
    #: are collected only after the view has been stable for twice this long.
    handoff_timeout: float = option(30.0, "duration", min=0.01)
    #: Transport settings.
    network: NetworkOptions = field(default_factory=NetworkOptions)
    #: Storage settings.
    storage: StorageOptions = field(default_factory=StorageOptions)
    #: Failure detector settings.
    membership: MembershipOptions = field(default_factory=MembershipOptions)
    #: Identity and trust root (peer authentication).
    auth: AuthOptions = field(default_factory=AuthOptions)
    #: Logging settings.
    log: LogOptions = field(default_factory=LogOptions)
    #: Metrics export (gridkv-metrics).
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    #: The Redis-protocol door (``gridkv node``).
    resp: RespOptions = field(default_factory=RespOptions)
    #: Liveness and readiness over HTTP (``gridkv node``).
    health: HealthOptions = field(default_factory=HealthOptions)

    def _check(self) -> None:
        if not self.local_node_id:
            object.__setattr__(self, "local_node_id", f"{socket.gethostname()}-{os.getpid()}")
        check_address("local_address", self.local_address, listening=True)
        if self.network.bind_addr:
            check_address("network.bind_addr", self.network.bind_addr, listening=True)
        for i, seed in enumerate(self.seed_addrs):
            if dns_seed(f"seed_addrs[{i}]", seed) is None:
                check_address(f"seed_addrs[{i}]", seed, listening=False)
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
