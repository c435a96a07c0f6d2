"""Reads and writes that need one replica, sent from the calling thread as redis-py sends.

A blocking :class:`~gridkv.GridKV` hands most of its work to the node's loop thread, and each
hand-off costs two thread wake-ups (about 50 us on a small VM, whatever the work). A read of a
key another node owns at ``one``, or a write to it that one replica's acknowledgement
satisfies, needs nothing of the loop: the calling thread asks the key's first replica
itself, over a TCP connection of its own to that replica (one per thread and replica, kept),
opened with the same authenticated handshake as the node's own connections and protected the
same way (:class:`~gridkv.transport.base.ConnectionGuard`).

A read's answer is checked as the loop's read checks it (the key, the partition, an entry
from before a long separation), the node's clock takes its version, and the node's hot cache
is used and filled exactly as by a read on the loop. A write is the entry the facade made
(its version from the node's clock), sent as a one-entry ``ReplicateBatch``; once the replica
stored it (or holds a newer version), the other replicas get it through the node's batches,
as a write the node holds itself; the hot cache forgets the key first, as for any write.

Anything out of the ordinary (no address for the replica, a dial or handshake that fails, a
time-out, an error answer, an entry not taken, a refusal) closes the thread's connection and
gives the call back to the loop's path, which tries the other replicas, waits and reports
errors (a write is sent again as it was: a replica that has it already holds it): so this
path changes how fast a call is, never what it does. A call may spend a dial
(``network.timeout``) and its own time-out here first; after a failure the replica's calls
go through the loop for ``network.reconnect_max_backoff``.

It serves the ``tcp`` transport without TLS, with authentication by the connection handshake
(``ed25519``) or none; otherwise every read goes through the loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING

from gridkv.base.errors import ShuttingDown
from gridkv.cluster.replication.reads import NEAR_MARGIN
from gridkv.wire import codec
from gridkv.wire.framing import HELLO, RECORD, RECORD_SLACK, REQUEST, RESPONSE, FrameReader, head
from gridkv.wire.messages import (
    HELD,
    STORED,
    BatchAck,
    GetReply,
    GetRequest,
    ReplicateBatch,
    WatchedGetReply,
    WatchedGetRequest,
)

if TYPE_CHECKING:
    from gridkv.node.node import Node
    from gridkv.storage.base import Entry
    from gridkv.transport.base import ConnectionGuard, Handshake
    from gridkv.wire.messages import Message

__all__ = ["DirectPath", "GAVE_UP"]

#: What :meth:`DirectReads.read` returns when the loop's path must take the read.
GAVE_UP = object()
#: How many forks led to this process; a path or a connection made in another generation is
#: its parent's (tested without the system call ``os.getpid`` makes).
_generation = [0]
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _generation.__setitem__(0, _generation[0] + 1))


class _Refused(Exception):
    """This path cannot take the read (the loop's path will)."""


class _Connection:
    """One thread's blocking connection to one node."""

    __slots__ = (
        "__weakref__",
        "address",
        "generation",
        "guard",
        "ids",
        "inner",
        "outer",
        "pending",
        "sock",
    )

    def __init__(self, address: str, sock: socket.socket, guard: ConnectionGuard | None) -> None:
        self.address = address
        self.sock = sock
        self.guard = guard
        self.ids = 0
        #: The process generation that opened it (see ``_generation``).
        self.generation = _generation[0]
        self.outer: FrameReader | None = None
        self.inner: FrameReader | None = None
        #: Frames read and not yet taken.
        self.pending: list[tuple[int, int, bytes]] = []

    def close(self) -> None:
        if self.generation == _generation[0]:  # a fork's copy must not end the parent's
            with contextlib.suppress(OSError):  # wakes a thread blocked reading it
                self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class _Holder:
    """One thread's connections; they close when the thread ends (its locals are freed)."""

    __slots__ = ("__weakref__", "conns")

    def __init__(self) -> None:
        self.conns: dict[str, _Connection] = {}
        weakref.finalize(self, _close_all, self.conns)


def _close_all(conns: dict[str, _Connection]) -> None:
    for conn in list(conns.values()):
        conn.close()
    conns.clear()


class DirectPath:
    """The one-replica reads and writes of one blocking facade, from the threads that call it.

    :param node: the facade's node (its table, membership, clock, hot cache, options).
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        options = node.options
        self._max = options.network.max_frame_bytes
        self._dial_timeout = options.network.timeout
        self._read_timeout = options.read_timeout
        self._write_timeout = options.replication_timeout
        #: After a failure with a replica, its calls go through the loop for this long (a
        #: replica that does not answer costs one call its time-out, not every call).
        self._shun_for = options.network.reconnect_max_backoff
        #: address -> monotonic time before which the loop's path takes its calls.
        self._shunned: dict[str, float] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Every open connection of every live thread (closed with the facade; a thread's
        #: close when it ends, with its thread-local holder).
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._closed = False
        self._generation = _generation[0]
        #: Calls this path answered, those it gave back to the loop, connections it opened.
        self.answered = 0
        self.given_back = 0
        #: Of those answered: reads and writes (the node's telemetry reports them).
        self.reads = 0
        self.writes = 0
        self.dials = 0

    @staticmethod
    def usable(node: Node) -> bool:
        """Whether this path can serve ``node``'s reads.

        On tcp without TLS, with authentication by the connection handshake or none.
        """
        options = node.options
        if node.transport.name != "tcp" or options.network.ssl.enabled:
            return False
        return node.messaging.guarded or node.authenticator.name == "none"

    def read(self, partition: int, key: str) -> Entry | object | None:
        """The entry of ``key`` from its first other replica, or :data:`GAVE_UP`."""
        node = self._node
        hot = node.coordinator.hot
        cached, entry = hot.lookup(key)
        if cached:
            self.reads += 1
            return entry
        owners = node.partitions.table.owners(partition)
        # An owner reads its own storage (on the loop, while a partition moves in).
        replica = owners[0] if owners and node.node_id not in owners else None
        address = None if replica is None else node.membership.address_of(replica)
        if replica is None or address is None or not self._open_for(address):
            return self._give_back()
        near = node.coordinator.reader.near_ttl
        asked = node.coordinator.ctx.loop_time()
        hot.begin(key)
        try:
            entry, watched = self._ask(replica, address, partition, key, near)
        except Exception:  # whatever it was, the loop's path takes the read
            hot.abandon(key)
            self._failed(address)
            return self._give_back()
        except BaseException:
            hot.abandon(key)
            self._drop(address)
            raise
        hot.finish(key, entry, asked + watched * NEAR_MARGIN if watched else None)
        self.answered += 1
        self.reads += 1
        return entry

    def _open_for(self, address: str) -> bool:
        """Whether this path may call ``address`` now."""
        if self._closed or _generation[0] != self._generation:  # (no getpid system call)
            return False
        until = self._shunned.get(address)
        return until is None or time.monotonic() >= until

    def _give_back(self) -> object:
        self.given_back += 1
        return GAVE_UP

    def write(self, partition: int, entry: Entry) -> bool:
        """Store ``entry`` on the partition's first replica; ``False``: give it to the loop.

        The other replicas get it through the node's batches.

        :raises ShuttingDown: the node's loop closed under the write.
        """
        node = self._node
        owners = node.partitions.table.owners(partition)
        replica = owners[0] if owners and node.node_id not in owners else None
        address = None if replica is None else node.membership.address_of(replica)
        if replica is None or address is None or not self._open_for(address):
            self.given_back += 1
            return False
        node.coordinator.hot.invalidate(entry.key)
        try:
            reply = self._request(
                replica, address, ReplicateBatch(node.node_id, [(partition, entry)]), True
            )
            if not isinstance(reply, BatchAck) or reply.results not in (
                bytes([STORED]),
                bytes([HELD]),
            ):
                raise _Refused("not stored")
        except Exception:  # whatever it was, the loop's path takes the write
            self._failed(address)
            self.given_back += 1
            return False
        except BaseException:
            self._drop(address)
            raise
        if len(owners) > 1:
            try:
                node.coordinator.replicate_soon(partition, entry, stored_by=replica)
            except RuntimeError:  # "Event loop is closed": closed under the write
                raise ShuttingDown(
                    f"node {node.node_id!r} closed during the write of key {entry.key!r:.60}"
                ) from None
        self.answered += 1
        self.writes += 1
        return True

    def _ask(
        self, replica: str, address: str, partition: int, key: str, watch: float
    ) -> tuple[Entry | None, float]:
        """The replica's entry of ``key``, and the seconds it watches the key for this node.

        ``watch``: the seconds asked for (0: a plain read).
        """
        node = self._node
        found: tuple[int, Entry] | None
        if watch:
            request = WatchedGetRequest(node.node_id, partition, key, round(watch * 1000))
            reply = self._request(replica, address, request, False)
            if not isinstance(reply, WatchedGetReply):
                raise _Refused(type(reply).__name__)
            found, watched = reply.entry, min(reply.watched_ms / 1000, watch)
        else:
            reply = self._request(replica, address, GetRequest(partition, key), False)
            if not isinstance(reply, GetReply):
                raise _Refused(type(reply).__name__)
            found, watched = reply.entry, 0.0
        if found is None:
            return None, watched
        part, entry = found
        if part != partition or entry.key != key:
            raise _Refused("an answer about another key")
        if entry.version < node.membership.oldest_taken(replica):
            raise _Refused("an entry from before a long separation")
        node.hlc.update(entry.version)
        return entry, watched

    def _request(self, replica: str, address: str, message: Message, write: bool) -> Message:
        """``message``'s answer from ``replica`` over this thread's connection to it."""
        conn = self._connection(replica, address)
        conn.ids += 1
        request_id = conn.ids
        payload = codec.encode(message, self._max)
        frame = head(REQUEST, request_id, len(payload)) + payload
        guard = conn.guard
        if guard is not None:
            record = guard.seal(frame)
            frame = head(RECORD, 0, len(record)) + record
        timeout = self._write_timeout if write else self._read_timeout
        deadline = time.monotonic() + timeout
        conn.sock.settimeout(timeout)  # a bound on the whole sendall, signals or not
        conn.sock.sendall(frame)
        while True:
            kind, answer_id, body = self._next_frame(conn, deadline)
            if kind == RESPONSE and answer_id == request_id:
                return codec.decode(body, self._max)

    def _next_frame(self, conn: _Connection, deadline: float) -> tuple[int, int, bytes]:
        """The next frame from ``conn`` (opened from its record), waiting until ``deadline``."""
        pending = conn.pending
        outer, inner, guard = conn.outer, conn.inner, conn.guard
        assert outer is not None
        while True:
            if pending:
                return pending.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Refused("no answer in time")
            conn.sock.settimeout(remaining)
            data = conn.sock.recv(262_144)
            if not data:
                raise _Refused("the connection closed")
            for kind, request_id, body in outer.feed(data, 0.0):
                if guard is None:
                    pending.append((kind, request_id, body))
                    continue
                if kind != RECORD or inner is None:
                    raise _Refused("a frame outside a record")
                pending.extend(inner.feed(guard.open(body), 0.0))
                if inner.buffered:
                    raise _Refused("a record that ends inside a frame")

    def _connection(self, replica: str, address: str) -> _Connection:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _Holder()
        conns = holder.conns
        conn = conns.get(address)
        if conn is not None and (conn.guard is None or not conn.guard.expired):
            return conn
        if conn is not None:
            self._drop(address)
        conn = self._dial(replica, address)
        conns[address] = conn
        return conn

    def _dial(self, replica: str, address: str) -> _Connection:
        self.dials += 1
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), self._dial_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handshake: Handshake | None = self._node.authenticator.handshake(lambda a: replica)
            guarded = handshake is not None and self._node.messaging.guarded
            conn = _Connection(address, sock, None)
            conn.outer = FrameReader(self._max + (RECORD_SLACK if guarded else 0))
            if guarded:
                assert handshake is not None
                conn.inner = FrameReader(self._max)
                pending, hello = handshake.initiate(address)
                sock.sendall(head(HELLO, 0, len(hello)) + hello)
                kind, _, reply = self._next_frame(conn, time.monotonic() + self._dial_timeout)
                if kind != HELLO:
                    raise _Refused("no reply to the hello")
                conn.guard = handshake.complete(address, pending, reply)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            if self._closed:
                sock.close()
                raise _Refused("closed")
            self._open.add(conn)
        return conn

    def _failed(self, address: str) -> None:
        """A call to ``address`` failed: drop this thread's connection, shun it a while."""
        self._shunned[address] = time.monotonic() + self._shun_for
        self._drop(address)

    def _drop(self, address: str) -> None:
        holder: _Holder | None = getattr(self._local, "holder", None)
        conn = None if holder is None else holder.conns.pop(address, None)
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        """Close every thread's connections; later reads go to the loop (which is closed)."""
        with self._lock:
            self._closed = True
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            conn.close()
