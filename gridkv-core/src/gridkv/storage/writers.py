"""The memory backend's table of writer ids: records hold a slot number, not the node id.

Each shard keeps one table, changed only under the shard's lock. It counts the records
referring to each id: an id is kept while a record refers to it and its slot is reused
afterwards, and the tables hold at most ``MAX_WRITERS`` ids together, so a stream of made-up
writer ids cannot grow the node for good.
"""

from __future__ import annotations

from gridkv.base.errors import MemoryLimitExceeded

__all__ = ["MAX_WRITERS", "WriterTable"]

#: Distinct writer ids the stored records may refer to at once. A real cluster has a few
#: hundred node ids at most (restarted nodes keep theirs); the bound keeps a peer that makes
#: ids up from growing the table without limit.
MAX_WRITERS = 65_536


class WriterTable:
    """Writer ids by slot, each with the number of records referring to it.

    :ivar writers: the id in each slot (``""`` for a free slot).
    :ivar writer_ids: the slot of each id in use.
    :ivar refs: the records referring to each slot.
    :param max_writers: the most ids the table holds at once (its share of ``MAX_WRITERS``).
    """

    __slots__ = ("free", "max_writers", "refs", "writer_ids", "writers")

    def __init__(self, max_writers: int) -> None:
        self.writers: list[str] = []
        self.writer_ids: dict[str, int] = {}
        self.refs: list[int] = []
        self.free: list[int] = []
        self.max_writers = max_writers

    def new_writer(self, writer: str) -> int:
        """A slot for a writer id not in the table yet, with one reference.

        :raises MemoryLimitExceeded: the table holds ``max_writers`` ids already.
        """
        if self.free:
            wid = self.free.pop()
            self.writers[wid] = writer
            self.refs[wid] = 1
        elif len(self.writers) < self.max_writers:
            wid = len(self.writers)
            self.writers.append(writer)
            self.refs.append(1)
        else:
            raise MemoryLimitExceeded(
                f"the records of a shard refer to {self.max_writers} distinct writer ids, "
                f"its share of the most a storage keeps; refused a record of writer "
                f"{writer[:64]!r} (a cluster with this many node ids is likely a peer "
                "making them up)"
            )
        self.writer_ids[writer] = wid
        return wid

    def unref(self, wid: int) -> None:
        """One record less refers to slot ``wid``; the slot is freed at zero."""
        refs = self.refs[wid] - 1
        self.refs[wid] = refs
        if not refs:
            del self.writer_ids[self.writers[wid]]
            self.writers[wid] = ""
            self.free.append(wid)
