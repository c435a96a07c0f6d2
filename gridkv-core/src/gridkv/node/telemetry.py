"""A node's OpenTelemetry instruments (``opentelemetry-api``: no-op until an SDK is set up).

Names follow OpenTelemetry's semantic conventions: a ``gridkv.`` prefix, seconds for
durations, ``By`` for bytes, attributes rather than name variants. Every observation carries
``gridkv.node.id``, so several nodes in one process keep separate series.

What it costs: almost every figure is an *observable* instrument, read from the counters the
node keeps anyway (transport, storage, membership, replication, handoff, anti-entropy,
authentication) only when a reader collects, so it costs the node nothing between collections.
Operations that go through the node's loop (reads and writes that need other replicas, or
wait for room) are counted by :meth:`NodeTelemetry.operation`, and the duration of one in 16
recorded in a histogram (an SDK takes about 6 us a record). Writes stored here at level one
(the facades' fast path, or the checked path) count into plain integers (:class:`FastCounts`),
and so do the blocking facade's direct-path calls: ``gridkv.operations`` with ``gridkv.path``
"local" or "direct", and no duration. The read fast path (a local ``get``) counts nothing: an
increment there was measured at 9% of its 170 ns.

The sampled durations also go to a small window per kind of operation (the last
:data:`LATENCY_WINDOW`), from which :meth:`NodeTelemetry.latency` gives the p50 and p99 that
``Stats.format_table()`` and ``gridkv status`` show without an SDK.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from gridkv.node.stats import OperationCounts, OperationLatency

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.cluster.antientropy.driver import AntiEntropy
    from gridkv.cluster.handoff.driver import Handoff
    from gridkv.cluster.membership.base import Membership
    from gridkv.cluster.replication.coordinator import Coordinator
    from gridkv.security.base import Authenticator
    from gridkv.storage.base import Entry, Storage
    from gridkv.transport.base import Transport


class DirectCounts(Protocol):
    """The reads and writes a blocking facade's direct path answered."""

    reads: int
    writes: int


class Observed(Protocol):
    """What the instruments read of a node (:class:`~gridkv.node.node.Node` has it)."""

    node_id: str
    options: Options
    transport: Transport
    storage: Storage
    membership: Membership
    coordinator: Coordinator
    handoff: Handoff
    anti_entropy: AntiEntropy
    authenticator: Authenticator


_log = logging.getLogger("gridkv")

__all__ = ["DURATION_SAMPLE", "LATENCY_WINDOW", "FastCounts", "NodeTelemetry", "Observed"]

#: Bucket boundaries of the duration histogram, in seconds: 50 us to 10 s (an SDK's default
#: boundaries are meant for milliseconds).
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: One operation in this many through the loop has its duration recorded (a uniform sample:
#: the histogram's percentiles are the operations', its count a sixteenth of theirs).
DURATION_SAMPLE = 16
#: Sampled durations kept per kind of operation for the terminal views' percentiles (the
#: latest; with :data:`DURATION_SAMPLE`, about the last 8,000 operations of the kind).
LATENCY_WINDOW = 512


class _Window:
    """The latest :data:`LATENCY_WINDOW` durations of one kind of operation, a ring."""

    __slots__ = ("next", "values")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.next = 0

    def add(self, seconds: float) -> None:
        if len(self.values) < LATENCY_WINDOW:
            self.values.append(seconds)
        else:
            self.values[self.next] = seconds
            self.next = (self.next + 1) % LATENCY_WINDOW


class FastCounts:
    """Writes the facades stored here at level one (fast path or checked), as integers."""

    __slots__ = ("deletes", "sets")

    def __init__(self) -> None:
        self.sets = 0
        self.deletes = 0

    def count_write(self, entry: Entry) -> None:
        """Count a write stored here by the checked path (a ``set``, or a tombstone)."""
        if entry.value is None:
            self.deletes += 1
        else:
            self.sets += 1


class NodeTelemetry:
    """The instruments of one node.

    :param node: the node observed.
    :param provider: the meter provider; the global one (``opentelemetry.metrics``) when
        ``None``, which is a no-op until an SDK is configured.
    :param version: GridKV's version (the meter's).
    """

    def __init__(
        self, node: Observed, provider: metrics.MeterProvider | None = None, version: str = ""
    ) -> None:
        self._node = node
        self.node_id = node.node_id
        self._attrs = {"gridkv.node.id": node.node_id}
        self.fast = FastCounts()
        #: (operation, consistency, outcome) -> count, for operations through the loop.
        self._ops: dict[tuple[str, str, str], int] = {}
        #: The same key -> its attributes (made once).
        self._labels: dict[tuple[str, str, str], dict[str, str]] = {}
        #: The same key -> its latest sampled durations (for :meth:`latency`).
        self._windows: dict[tuple[str, str, str], _Window] = {}
        #: The blocking facades' direct paths (reads and writes sent from calling threads).
        self.direct: weakref.WeakSet[DirectCounts] = weakref.WeakSet()
        provider = provider or metrics.get_meter_provider()
        instruments = _REGISTRY.get(provider)
        if instruments is None:
            # One set of instruments per provider (a meter refuses a name twice), observing
            # every node of the process that reports to it.
            instruments = _REGISTRY[provider] = _Instruments(provider, version)
        self._instruments = instruments
        self.duration = instruments.duration
        self.lag = instruments.lag
        #: Replication lag lately, in seconds: a moving average over the batches delivered
        #: (each weighs a tenth), for ``gridkv status``.
        self.recent_lag = 0.0
        instruments.add(self)

    def replicated(self, seconds: float) -> None:
        """Record a batch's replication lag (its queueing to the replica's answer)."""
        self.lag.record(seconds, self._attrs)
        self.recent_lag += (seconds - self.recent_lag) * 0.1

    def operation_counts(self) -> OperationCounts:
        """Operations counted so far, ``"<operation> <level> <outcome>"`` -> count.

        Those through the loop, then the writes stored here (``"set one ok (local)"``,
        ``"delete one ok (local)"``) and the blocking facades' direct path (``"get one ok
        (direct)"``, ``"set one ok (direct)"``), each when not 0. The result carries
        :meth:`latency` (``.latency``), which :class:`~gridkv.node.stats.Stats` takes.
        """
        counts = self._counts()
        counts.latency = self.latency()
        return counts

    def _counts(self) -> OperationCounts:
        counts = OperationCounts((" ".join(key), n) for key, n in list(self._ops.items()))
        paths = list(self.direct)
        for name, n in (
            ("set one ok (local)", self.fast.sets),
            ("delete one ok (local)", self.fast.deletes),
            ("get one ok (direct)", sum(p.reads for p in paths)),
            ("set one ok (direct)", sum(p.writes for p in paths)),
        ):
            if n:
                counts[name] = n
        return counts

    def latency(self) -> dict[str, OperationLatency]:
        """p50 and p99 of the latest sampled durations, per ``"<operation> <level> <outcome>"``.

        From the last :data:`LATENCY_WINDOW` durations recorded of each kind of operation
        through the loop (one in :data:`DURATION_SAMPLE`); kinds with none are left out.
        """
        return {
            " ".join(key): OperationLatency.of(window.values)
            for key, window in list(self._windows.items())
            if window.values
        }

    def status_figures(self) -> dict[str, object]:
        """Key figures for ``gridkv status``: operations so far, and loop latency.

        ``operations``: every operation counted (all paths); ``latency_p50`` and
        ``latency_p99``: over the latest sampled durations of the successful operations
        through the loop (``None`` before any).
        """
        counts = self._counts()
        samples = [
            seconds
            for key, window in list(self._windows.items())
            if key[2] == "ok"
            for seconds in list(window.values)
        ]
        merged = OperationLatency.of(samples) if samples else None
        return {
            "operations": sum(counts.values()),
            "latency_p50": merged.p50 if merged else None,
            "latency_p99": merged.p99 if merged else None,
        }

    def close(self) -> None:
        """Stop reporting this node (it closed): its series end."""
        self._instruments.discard(self)

    def operation(self, what: str, level: str, started: float, ok: bool) -> None:
        """Count an operation through the loop that started at ``started`` (perf_counter).

        Every one is counted; the duration of one in :data:`DURATION_SAMPLE` is recorded (an
        SDK's histogram takes about 6 us a record, a fifth of such an operation's cost).
        """
        key = (what, level, "ok" if ok else "error")
        count = self._ops[key] = self._ops.get(key, 0) + 1
        if count % DURATION_SAMPLE != 1:  # per kind of operation: no aliasing between kinds
            return
        seconds = time.perf_counter() - started
        attributes = self._labels.get(key)
        if attributes is None:
            attributes = self._labels[key] = {
                **self._attrs,
                "gridkv.operation": what,
                "gridkv.consistency": level,
                "gridkv.outcome": key[2],
            }
            self._windows[key] = _Window()
        self._windows[key].add(seconds)
        self.duration.record(seconds, attributes)

    # -- the observable instruments' callbacks ---------------------------------------------

    def observers(self) -> dict[str, Callable[[CallbackOptions], Iterable[Observation]]]:
        """The callback of each observable instrument, for this node."""
        return {
            "gridkv.operations": self._operations,
            "gridkv.network.io": self._network_io,
            "gridkv.network.frames": self._network_frames,
            "gridkv.network.connections": self._connections,
            "gridkv.network.errors": self._network_errors,
            "gridkv.storage.keys": self._keys,
            "gridkv.storage.memory.usage": self._memory,
            "gridkv.storage.removals": self._removals,
            "gridkv.storage.compression.ratio": self._compression,
            "gridkv.membership.members": self._members,
            "gridkv.membership.health_score": self._health,
            "gridkv.membership.probes": self._probes,
            "gridkv.membership.refutations": self._refutations,
            "gridkv.membership.suspicions": self._suspicions,
            "gridkv.replication.batches": self._batches,
            "gridkv.replication.entries": self._replicated,
            "gridkv.replication.backlog": self._backlog,
            "gridkv.handoff.entries": self._handoffs,
            "gridkv.antientropy.rounds": self._rounds,
            "gridkv.antientropy.entries": self._repaired,
            "gridkv.antientropy.differences": self._differences,
            "gridkv.antientropy.last_round.differences": self._last_round,
            "gridkv.antientropy.io": self._repaired_bytes,
            "gridkv.auth.rejections": self._rejections,
        }

    def _with(self, **attributes: str) -> dict[str, str]:
        return {**self._attrs, **attributes}

    def _operations(self, options: CallbackOptions) -> Iterator[Observation]:
        for (what, level, outcome), count in list(self._ops.items()):
            yield Observation(
                count,
                self._with(
                    **{
                        "gridkv.operation": what,
                        "gridkv.consistency": level,
                        "gridkv.outcome": outcome,
                        "gridkv.path": "loop",
                    }
                ),
            )
        # Writes stored here, and the direct path's calls, are all at level one.
        one = {"gridkv.consistency": "one", "gridkv.outcome": "ok"}
        for what, count in (("set", self.fast.sets), ("delete", self.fast.deletes)):
            local = {**one, "gridkv.operation": what, "gridkv.path": "local"}
            yield Observation(count, self._with(**local))
        paths = list(self.direct)
        if paths:
            for what, count in (
                ("get", sum(p.reads for p in paths)),
                ("set", sum(p.writes for p in paths)),
            ):
                direct = {**one, "gridkv.operation": what, "gridkv.path": "direct"}
                yield Observation(count, self._with(**direct))

    def _network_io(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.transport.stats()
        return (
            Observation(stats.bytes_received, self._with(**{"network.io.direction": "receive"})),
            Observation(stats.bytes_sent, self._with(**{"network.io.direction": "transmit"})),
        )

    def _network_frames(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.transport.stats()
        figures = (
            ("receive", "request", stats.requests_received),
            ("transmit", "request", stats.requests_sent),
            ("receive", "one_way", stats.messages_received),
            ("transmit", "one_way", stats.messages_sent),
        )
        return (
            Observation(n, self._with(**{"network.io.direction": d, "gridkv.frame.kind": k}))
            for d, k, n in figures
        )

    def _connections(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.transport.stats()
        return (Observation(stats.connections, self._with(**{"network.transport": stats.type})),)

    def _network_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.transport.stats()
        figures = (
            ("failed", stats.errors),
            ("slow_reader", stats.slow_reader_cuts),
            ("inbound_full", stats.inbound_full_cuts),
            ("slow_frame", stats.slow_frame_cuts),
        )
        return (Observation(n, self._with(**{"error.type": e})) for e, n in figures)

    def _keys(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.storage.stats()
        return (
            Observation(stats.keys, self._with(**{"gridkv.key.kind": "value"})),
            Observation(stats.tombstones, self._with(**{"gridkv.key.kind": "tombstone"})),
            Observation(stats.compressed, self._with(**{"gridkv.key.kind": "compressed"})),
        )

    def _memory(self, options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(self._node.storage.stats().used_bytes, self._attrs),)

    def _compression(self, options: CallbackOptions) -> Iterable[Observation]:
        sample = getattr(self._node.storage, "compression_sample", None)
        if sample is None:
            return ()
        raw, stored = sample()
        return (Observation(raw / stored, self._attrs),) if stored else ()

    def _removals(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._node.storage.stats()
        figures = (
            ("eviction", stats.evictions),
            ("expiration", stats.expirations),
            ("tombstone_collected", stats.tombstones_collected),
        )
        return (Observation(n, self._with(**{"gridkv.removal.reason": r})) for r, n in figures)

    def _members(self, options: CallbackOptions) -> Iterable[Observation]:
        states: dict[str, int] = dict.fromkeys(("alive", "suspect", "dead", "left"), 0)
        for member in self._node.membership.members():
            states[member.state] = states.get(member.state, 0) + 1
        return (Observation(n, self._with(**{"gridkv.member.state": s})) for s, n in states.items())

    def _health(self, options: CallbackOptions) -> Iterable[Observation]:
        score = getattr(self._node.membership, "health_score", lambda: 0)()
        return (Observation(int(score), self._attrs),)

    def _swim_counts(self) -> tuple[int, int, int, int, int]:
        """Probes acknowledged and failed, refutations, suspicions raised and heard."""
        swim = getattr(self._node.membership, "swim", None)  # another protocol: none
        if swim is None:
            return 0, 0, 0, 0, 0
        return (
            swim.probes_acked,
            swim.probes_failed,
            swim.refutations,
            swim.suspicions_raised,
            swim.suspicions_heard,
        )

    def _probes(self, options: CallbackOptions) -> Iterable[Observation]:
        acked, failed, *_ = self._swim_counts()  # each only ever grows: counters
        return (
            Observation(acked, self._with(**{"gridkv.outcome": "ok"})),
            Observation(failed, self._with(**{"gridkv.outcome": "failed"})),
        )

    def _refutations(self, options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(self._swim_counts()[2], self._attrs),)

    def _suspicions(self, options: CallbackOptions) -> Iterable[Observation]:
        *_, raised, heard = self._swim_counts()
        return (
            Observation(raised, self._with(**{"gridkv.suspicion.origin": "local"})),
            Observation(heard, self._with(**{"gridkv.suspicion.origin": "remote"})),
        )

    def _batches(self, options: CallbackOptions) -> Iterable[Observation]:
        coordinator = self._node.coordinator
        return (
            Observation(coordinator.batches_sent, self._with(**{"gridkv.outcome": "ok"})),
            Observation(coordinator.send_failures, self._with(**{"gridkv.outcome": "error"})),
        )

    def _replicated(self, options: CallbackOptions) -> Iterable[Observation]:
        coordinator = self._node.coordinator
        return (
            Observation(coordinator.entries_replicated, self._with(**{"gridkv.outcome": "ok"})),
            Observation(coordinator.entries_refused, self._with(**{"gridkv.outcome": "refused"})),
        )

    def _backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        backlog = self._node.coordinator.batcher.backlog
        return (
            Observation(size, self._with(**{"gridkv.peer.id": peer}))
            for peer, size in list(backlog.items())
        )

    def _handoffs(self, options: CallbackOptions) -> Iterable[Observation]:
        handoff = self._node.handoff
        figures = (
            ("sent", handoff.entries_sent),
            ("dropped", handoff.entries_dropped),
            ("abandoned", handoff.entries_abandoned),
        )
        return (Observation(n, self._with(**{"gridkv.outcome": o})) for o, n in figures)

    def _rounds(self, options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(self._node.anti_entropy.rounds, self._attrs),)

    def _repaired(self, options: CallbackOptions) -> Iterable[Observation]:
        driver = self._node.anti_entropy
        return (
            Observation(driver.entries_received, self._with(**{"network.io.direction": "receive"})),
            Observation(driver.entries_sent, self._with(**{"network.io.direction": "transmit"})),
        )

    def _repaired_bytes(self, options: CallbackOptions) -> Iterable[Observation]:
        driver = self._node.anti_entropy
        return (
            Observation(driver.bytes_received, self._with(**{"network.io.direction": "receive"})),
            Observation(driver.bytes_sent, self._with(**{"network.io.direction": "transmit"})),
        )

    def _differences(self, options: CallbackOptions) -> Iterable[Observation]:
        driver = self._node.anti_entropy
        return (
            Observation(driver.partitions_differing, self._with(**{"gridkv.scope": "partition"})),
            Observation(driver.buckets_differing, self._with(**{"gridkv.scope": "bucket"})),
            Observation(driver.keys_differing, self._with(**{"gridkv.scope": "key"})),
        )

    def _last_round(self, options: CallbackOptions) -> Iterable[Observation]:
        partitions, buckets, keys = self._node.anti_entropy.last_round
        figures = (("partition", partitions), ("bucket", buckets), ("key", keys))
        return (Observation(n, self._with(**{"gridkv.scope": scope})) for scope, n in figures)

    def _rejections(self, options: CallbackOptions) -> Iterable[Observation]:
        return (
            Observation(n, self._with(**{"gridkv.auth.reason": reason}))
            for reason, n in dict(self._node.authenticator.rejections()).items()
        )


class _Instruments:
    """The instruments on one meter provider, observing the nodes registered with them."""

    def __init__(self, provider: metrics.MeterProvider, version: str) -> None:
        meter = provider.get_meter("gridkv", version or None)
        #: The nodes observed (a node dropped without a close goes with its last reference);
        #: readers collect from their own threads, so it changes and is copied under the lock.
        self._nodes: weakref.WeakSet[NodeTelemetry] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.duration = meter.create_histogram(
            "gridkv.operation.duration",
            unit="s",
            description="Duration of the operations that went through the node's event loop.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.lag = meter.create_histogram(
            "gridkv.replication.lag",
            unit="s",
            description="From a batch's oldest write to its replica's acknowledgement.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        for name, kind, unit, description in _INSTRUMENTS:
            make = getattr(meter, f"create_observable_{kind}")
            make(name, callbacks=[self._callback(name)], unit=unit, description=description)

    def add(self, node: NodeTelemetry) -> None:
        """Observe ``node`` from now on."""
        with self._lock:
            self._nodes.add(node)

    def discard(self, node: NodeTelemetry) -> None:
        """Stop observing ``node``."""
        with self._lock:
            self._nodes.discard(node)

    @property
    def nodes(self) -> list[NodeTelemetry]:
        """The nodes observed now."""
        with self._lock:
            return list(self._nodes)

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            for node in self.nodes:
                try:  # one node's trouble does not hide the others' figures
                    observed = list(node.observers()[name](options))
                except Exception:
                    _log.warning(
                        "a metric of node %r could not be read", node.node_id, exc_info=True
                    )
                    continue
                yield from observed

        return observe


#: Meter provider -> its instruments (a provider that is no longer used is forgotten).
_REGISTRY: weakref.WeakKeyDictionary[metrics.MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)

#: (name, kind, unit, description) of every observable instrument.
_INSTRUMENTS = (
    ("gridkv.operations", "counter", "{operation}", "Operations by kind, level, outcome, path."),
    ("gridkv.network.io", "counter", "By", "Frame bytes received and sent."),
    ("gridkv.network.frames", "counter", "{frame}", "Frames received and sent, by kind."),
    ("gridkv.network.connections", "up_down_counter", "{connection}", "Open connections."),
    ("gridkv.network.errors", "counter", "{error}", "Failed sends and cut connections."),
    ("gridkv.storage.keys", "up_down_counter", "{key}", "Entries stored, by kind."),
    ("gridkv.storage.memory.usage", "up_down_counter", "By", "Memory charged for entries."),
    ("gridkv.storage.removals", "counter", "{entry}", "Entries evicted, expired, collected."),
    ("gridkv.storage.compression.ratio", "gauge", "1", "Value bytes over stored bytes."),
    ("gridkv.membership.members", "up_down_counter", "{member}", "Members in view, by state."),
    ("gridkv.membership.health_score", "gauge", "1", "Local health score (0 is healthy)."),
    ("gridkv.membership.probes", "counter", "{probe}", "Probes sent, by outcome."),
    ("gridkv.membership.refutations", "counter", "{refutation}", "Suspicions refuted."),
    ("gridkv.membership.suspicions", "counter", "{suspicion}", "Suspicions taken, by origin."),
    ("gridkv.replication.batches", "counter", "{batch}", "Replication batches sent."),
    ("gridkv.replication.entries", "counter", "{entry}", "Entries replicated to peers."),
    ("gridkv.replication.backlog", "up_down_counter", "By", "Bytes not yet acknowledged."),
    ("gridkv.handoff.entries", "counter", "{entry}", "Entries handed to new owners."),
    ("gridkv.antientropy.rounds", "counter", "{round}", "Anti-entropy rounds run."),
    ("gridkv.antientropy.entries", "counter", "{entry}", "Entries repaired by anti-entropy."),
    (
        "gridkv.antientropy.differences",
        "counter",
        "{difference}",
        "Partitions, buckets and keys found differing from a co-replica's.",
    ),
    (
        "gridkv.antientropy.last_round.differences",
        "gauge",
        "{difference}",
        "Partitions, buckets and keys the last complete anti-entropy round found differing.",
    ),
    ("gridkv.antientropy.io", "counter", "By", "Bytes of the entries repaired."),
    ("gridkv.auth.rejections", "counter", "{frame}", "Frames refused, by reason."),
)
