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

__all__ = ["Keyspace", "glob_to_regex"]

#: Partitions listed by one request at most.
_PARTITIONS_PER_REQUEST = 32


@lru_cache(maxsize=256)
def glob_to_regex(pattern: bytes) -> re.Pattern[bytes]:
    r"""A compiled regular expression matching what Redis's glob ``pattern`` matches.

    ``*`` any run, ``?`` one byte, ``[abc]``, ``[^a]``, ``[a-z]`` (a reversed range works as
    Redis's does), ``\x`` the byte ``x``. An unclosed ``[`` takes the rest as its set.
    """
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        i += 1
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i < n:
            out += re.escape(pattern[i : i + 1])
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
                elif (
                    pattern[i + 1 : i + 2] == b"-" and i + 2 < n and pattern[i + 2 : i + 3] != b"]"
                ):
                    low, high = pattern[i], pattern[i + 2]
                    low, high = min(low, high), max(low, high)
                    members += re.escape(bytes([low])) + b"-" + re.escape(bytes([high]))
                    i += 3
                else:
                    members += re.escape(ch)
                    i += 1
            i += 1  # the closing "]"
            if not members:
                out += b"[^\\x00-\\xff]" if not negate else b"[\\x00-\\xff]"
            else:
                out += b"[" + (b"^" if negate else b"") + bytes(members) + b"]"
        else:
            out += re.escape(c)
    return re.compile(bytes(out), re.DOTALL)


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
    ) -> tuple[list[str], int]:
        """The live keys this node holds of ``partitions`` matching ``pattern``, and how many.

        At most ``limit`` keys (0: all); with ``count_only``, no keys, only the count.
        """
        ctx = self.ctx
        storage = ctx.storage
        now = ctx.now_ms()
        match = glob_to_regex(pattern).fullmatch if pattern not in (b"", b"*") else None
        keys: list[str] = []
        count = 0
        for partition in partitions:
            if not ctx.partitions.holds(partition):
                continue
            for entry in storage.entries(partition):
                if entry.value is None or entry.expired(now):
                    continue
                if match is not None and match(entry.key.encode()) is None:
                    continue
                count += 1
                if not count_only:
                    keys.append(entry.key)
                    if limit and len(keys) >= limit:
                        return keys, count
        return keys, count

    def on_keys(self, message: KeysRequest) -> KeysReply:
        """A peer's listing of partitions it takes this node to be primary of."""
        count_limit = self.ctx.options.partition_count
        if any(p >= count_limit for p in message.partitions):
            raise ProtocolError("partition out of range")
        keys, count = self.local(
            message.partitions, message.pattern, message.limit, message.count_only
        )
        return KeysReply(keys, count)

    async def gather(
        self,
        partitions: Iterable[int] | None,
        pattern: bytes = b"",
        limit: int = 0,
        count_only: bool = False,
    ) -> tuple[list[str], int]:
        """The live keys of ``partitions`` (all: ``None``) in the cluster, and how many.

        Each partition is listed by its primary owner; the nodes are asked at once.

        :raises PeerUnavailable: a node did not answer (its keys would be missing).
        :raises PeerTimeout: a node did not answer within ``read_timeout``.
        """
        ctx = self.ctx
        wanted = range(ctx.options.partition_count) if partitions is None else partitions
        by_node: dict[str, list[int]] = {}
        for partition in wanted:
            by_node.setdefault(self._primary(partition), []).append(partition)

        async def ask(node: str, parts: list[int]) -> tuple[list[str], int]:
            if node == ctx.node_id:
                return self.local(parts, pattern, limit, count_only)
            address = ctx.membership.address_of(node)
            if address is None:
                raise PeerUnavailable(f"node {node!r}, which lists some keys, is not in the view")
            keys: list[str] = []
            count = 0
            # A few partitions a request, so an answer stays well within a frame.
            for start in range(0, len(parts), _PARTITIONS_PER_REQUEST):
                chunk = parts[start : start + _PARTITIONS_PER_REQUEST]
                left = limit - len(keys) if limit else 0
                request = KeysRequest(ctx.node_id, chunk, pattern, left, count_only)
                reply = await ctx.messaging.request(address, request, ctx.options.read_timeout)
                if not isinstance(reply, KeysReply):
                    raise ProtocolError(
                        f"expected KeysReply from {node!r}, got {type(reply).__name__}"
                    )
                keys += reply.keys
                count += reply.count
                if limit and len(keys) >= limit:
                    break
            return keys, count

        answers = await asyncio.gather(*(ask(n, p) for n, p in by_node.items()))
        keys = [k for found, _ in answers for k in found]
        return keys, sum(count for _, count in answers)
