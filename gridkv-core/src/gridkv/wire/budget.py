"""Byte budgets for messages that carry many entries or keys.

Replication batches, handoff chunks and anti-entropy's key lists and transfers are cut to a
budget of bytes, not only a count, so a message never outgrows ``network.max_frame_bytes``
whatever the values weigh, and one bulk message never holds a connection or an event loop
for long. The budget is a quarter of the frame limit and at most ``BULK_MESSAGE_BYTES``; an
entry larger than the budget (a value near ``max_value_bytes``) travels alone, and the
options make sure such an entry still fits in a frame.

Sizes are estimated from string lengths in characters: a key's UTF-8 form is at most four
times as long, so a message estimated within a quarter of the frame limit always fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from gridkv.storage.base import Entry

__all__ = [
    "BULK_MESSAGE_BYTES",
    "MAX_ITEMS_PER_MESSAGE",
    "message_budget",
    "entry_size",
    "version_size",
    "chunks",
]

#: Largest bulk message, in estimated bytes.
BULK_MESSAGE_BYTES = 1 << 20
#: Most entries or keys in one bulk message, however small: bounds the time a receiver
#: spends on one message.
MAX_ITEMS_PER_MESSAGE = 10_000
#: Bytes an entry costs on the wire besides its key, value and writer (msgpack framing of the
#: record and its entry, the partition, version and expiry integers), rounded up.
_ENTRY_OVERHEAD = 40
_VERSION_OVERHEAD = 24

_T = TypeVar("_T")


def message_budget(max_frame_bytes: int) -> int:
    """The byte budget of one bulk message under a frame limit of ``max_frame_bytes``."""
    return max(1024, min(BULK_MESSAGE_BYTES, max_frame_bytes // 4))


def entry_size(entry: Entry) -> int:
    """The estimated wire size of an entry record."""
    value = entry.value
    return (
        len(entry.key) + len(entry.writer) + (0 if value is None else len(value)) + _ENTRY_OVERHEAD
    )


def version_size(key: str, writer: str) -> int:
    """The estimated wire size of a ``[key, version, writer]`` triple."""
    return len(key) + len(writer) + _VERSION_OVERHEAD


def chunks(
    items: Iterable[_T],
    size: Callable[[_T], int],
    budget: int,
    max_items: int = MAX_ITEMS_PER_MESSAGE,
) -> Iterator[list[_T]]:
    """Split ``items`` into lists of at most ``budget`` estimated bytes and ``max_items``.

    An item larger than the budget makes a list of its own; no list is empty.
    """
    chunk: list[_T] = []
    used = 0
    for item in items:
        cost = size(item)
        if chunk and (used + cost > budget or len(chunk) >= max_items):
            yield chunk
            chunk = []
            used = 0
        chunk.append(item)
        used += cost
    if chunk:
        yield chunk
