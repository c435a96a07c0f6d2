"""The cluster's keys, gathered: KEYS, SCAN, DBSIZE, RANDOMKEY and FLUSHALL ask this.

A key is listed by its partition's primary owner (its first live replica, the node that runs
its atomic operations), so each key is listed once though several nodes hold it. A node asked
for partitions lists the live keys it holds of them (no tombstones, nothing expired) that
match a Redis glob pattern. Listing reads a snapshot of each partition; a key written while
the listing runs may or may not be in it, as with Redis's SCAN.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from gridkv.base.errors import PeerUnavailable, ProtocolError
from gridkv.wire.messages import KeysReply, KeysRequest

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext

__all__ = ["Keyspace", "Glob", "glob"]

#: Partitions listed by one request at most.
_PARTITIONS_PER_REQUEST = 32


def _tokens(pattern: bytes) -> list[bytes | None]:
    """``pattern`` as tokens: ``None`` for ``*``, else the regex of one byte.

    A byte is ``?``, a set or a literal. An unclosed ``[`` takes the rest as its set.
    """
    out: list[bytes | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        i += 1
        if c == b"*":
            if not out or out[-1] is not None:  # "**" is "*"
                out.append(None)
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i < n:
            out.append(re.escape(pattern[i : i + 1]))
            i += 1
        elif c == b"[":
            negate = pattern[i : i + 1] == b"^"
            if negate:
                i += 1
            members = bytearray()
            while i < n and pattern[i : i + 1] != b"]":
                ch = pattern[i : i + 1]
                if ch == b"\\" and i + 1 < n:
                    members += re.escape(pattern[i + 1 : i + 2])
                    i += 2
                elif pattern[i + 1 : i + 2] == b"-" and i + 2 < n:
                    low, high = sorted((pattern[i], pattern[i + 2]))  # Redis takes [z-a] too
                    members += re.escape(bytes([low])) + b"-" + re.escape(bytes([high]))
                    i += 3
                else:
                    members += re.escape(ch)
                    i += 1
            i += 1  # the closing "]"
            if not members:
                out.append(b"[\\x00-\\xff]" if negate else b"[^\\x00-\\xff]")
            else:
                out.append(b"[" + (b"^" if negate else b"") + bytes(members) + b"]")
        else:
            out.append(re.escape(c))
    return out


class Glob:
    r"""A Redis glob, matched in time linear in the key's length times the pattern's.

    ``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\x`` as Redis reads them.

    The pattern is cut at its stars into segments of one byte per token, each compiled to a
    regular expression without repetition: the first must match at the start, the last at
    the end, and the others leftmost in order between them (the leftmost place is always the
    best for a segment of fixed length). No backtracking over stars, so no pattern can make a
    match take exponential time, as ``*a*a*a*b`` does to a regular expression with ``.*``.
    """

    __slots__ = ("_exact", "_lengths", "_segments", "_starred")

    def __init__(self, pattern: bytes) -> None:
        tokens = _tokens(pattern)
        segments: list[list[bytes]] = [[]]
        for token in tokens:
            if token is None:
                segments.append([])
            else:
                segments[-1].append(token)
        self._starred = len(segments) > 1
        self._segments = [re.compile(b"".join(s), re.DOTALL) for s in segments]
        self._lengths = [len(s) for s in segments]
        self._exact = sum(self._lengths)

    def matches(self, key: bytes) -> bool:
        """Whether ``key`` matches."""
        segments, lengths = self._segments, self._lengths
        if not self._starred:
            return len(key) == self._exact and segments[0].match(key) is not None
        if len(key) < self._exact or segments[0].match(key) is None:
            return False
        end = len(key) - lengths[-1]
        if segments[-1].match(key, end) is None:
            return False
        pos = lengths[0]
        for segment, length in zip(segments[1:-1], lengths[1:-1], strict=True):
            if not length:
                continue
            found = segment.search(key, pos, end)
            if found is None:
                return False
            pos = found.end()
        return pos <= end


@lru_cache(maxsize=256)
def glob(pattern: bytes) -> Glob:
    """The compiled :class:`Glob` of ``pattern`` (the last 256 are kept)."""
    return Glob(pattern)


class Keyspace:
    """Lists this node's keys for peers, and gathers the cluster's.

    :param ctx: the node's cluster context.
    :param primary: the node that lists a partition's keys (its first live replica).
    """

    def __init__(self, ctx: ClusterContext, primary: Callable[[int], str]) -> None:
        self.ctx = ctx
        self._primary = primary

    def local(
        self, partitions: Iterable[int], pattern: bytes, limit: int, count_only: bool
    ) -> tuple[list[str], list[int], int]:
        """The live keys this node holds of ``partitions`` matching ``pattern``.

        With the version of each, and how many there are. At most ``limit`` keys (0: all);
        with ``count_only``, no keys, only the count.
        """
        ctx = self.ctx
        storage = ctx.storage
        now = ctx.now_ms()
        match = glob(pattern).matches if pattern not in (b"", b"*") else None
        keys: list[str] = []
        versions: list[int] = []
        count = 0
        for partition in partitions:
            if not ctx.partitions.holds(partition):
                continue
            for entry in storage.entries(partition):
                if entry.value is None or entry.expired(now):
                    continue
                if match is not None and not match(entry.key.encode()):
                    continue
                count += 1
                if not count_only:
                    keys.append(entry.key)
                    versions.append(entry.version)
                    if limit and len(keys) >= limit:
                        return keys, versions, count
        return keys, versions, count

    def on_keys(self, message: KeysRequest) -> KeysReply:
        """A peer's listing of partitions it takes this node to be primary of."""
        count_limit = self.ctx.options.partition_count
        if any(p >= count_limit for p in message.partitions):
            raise ProtocolError("partition out of range")
        keys, versions, count = self.local(
            message.partitions, message.pattern, message.limit, message.count_only
        )
        return KeysReply(keys, versions, count)

    async def gather(
        self,
        partitions: Iterable[int] | None,
        pattern: bytes = b"",
        limit: int = 0,
        count_only: bool = False,
    ) -> tuple[list[str], list[int], int]:
        """The live keys of ``partitions`` (all: ``None``) in the cluster.

        With the version of each, and how many there are. Each partition is listed by its
        primary owner; the nodes are asked at once.

        :raises PeerUnavailable: a node did not answer (its keys would be missing).
        :raises PeerTimeout: a node did not answer within ``read_timeout``.
        """
        ctx = self.ctx
        wanted = range(ctx.options.partition_count) if partitions is None else partitions
        by_node: dict[str, list[int]] = {}
        for partition in wanted:
            by_node.setdefault(self._primary(partition), []).append(partition)

        async def ask(node: str, parts: list[int]) -> tuple[list[str], list[int], int]:
            if node == ctx.node_id:
                return self.local(parts, pattern, limit, count_only)
            address = ctx.membership.address_of(node)
            if address is None:
                raise PeerUnavailable(f"node {node!r}, which lists some keys, is not in the view")
            keys: list[str] = []
            versions: list[int] = []
            count = 0
            # A few partitions a request, so an answer stays well within a frame.
            for start in range(0, len(parts), _PARTITIONS_PER_REQUEST):
                chunk = parts[start : start + _PARTITIONS_PER_REQUEST]
                left = limit - len(keys) if limit else 0
                request = KeysRequest(ctx.node_id, chunk, pattern, left, count_only)
                reply = await ctx.messaging.request(address, request, ctx.options.read_timeout)
                if not isinstance(reply, KeysReply) or len(reply.versions) != len(reply.keys):
                    raise ProtocolError(f"expected a KeysReply from {node!r}")
                keys += reply.keys
                versions += reply.versions
                count += reply.count
                if limit and len(keys) >= limit:
                    break
            return keys, versions, count

        answers = await asyncio.gather(*(ask(n, p) for n, p in by_node.items()))
        keys = [k for found, _, _ in answers for k in found]
        versions = [v for _, found, _ in answers for v in found]
        return keys, versions, sum(count for _, _, count in answers)
