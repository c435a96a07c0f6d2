"""What anti-entropy compares and what it exchanges, decided without I/O.

Which buckets of two digest lists differ (:func:`differing`), the key-hash ranges covering a
set of buckets (:func:`ranges`), how a range's version list is cut into pages of a message
budget (:func:`pages`), and, comparing this node's versions with a peer's list, what to give
and what to ask for (:func:`diff_versions`). :mod:`gridkv.cluster.antientropy.driver` runs
them over the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gridkv.base.hlc import version_wins
from gridkv.storage.base import VersionRecord, bucket_range
from gridkv.wire.budget import version_size

__all__ = ["differing", "ranges", "pages", "diff_versions"]


def differing(mine: Sequence[int], theirs: Sequence[int]) -> list[int]:
    """The indexes where two digest lists differ."""
    return [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]


def ranges(buckets: Iterable[int]) -> list[tuple[int, int]]:
    """The key-hash ranges ``[low, high]`` covering ``buckets``, adjacent buckets merged."""
    out: list[tuple[int, int]] = []
    for bucket in sorted(set(buckets)):
        low, high = bucket_range(bucket)
        if out and out[-1][1] + 1 == low:
            out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    return out


def pages(
    records: Sequence[VersionRecord], low: int, high: int, budget: int
) -> list[tuple[int, int, list[VersionRecord]]]:
    """Split the records of ``[low, high]`` into ``(low, high, records)`` pages of ``budget``.

    Pages cover the range without gaps, in hash order; records with the same hash stay on one
    page, so a page's range says exactly which keys it lists. A range with no records is one
    empty page (the peer then sends what it holds there).
    """
    inside = sorted(r for r in records if low <= r[0] <= high)
    if not inside:
        return [(low, high, [])]
    out: list[tuple[int, int, list[VersionRecord]]] = []
    start = low
    page: list[VersionRecord] = []
    used = 0
    for i, record in enumerate(inside):
        page.append(record)
        used += version_size(record[1], record[3])
        last = i + 1 == len(inside)
        if not last and used >= budget and inside[i + 1][0] != record[0]:
            out.append((start, record[0], page))
            start = record[0] + 1
            page = []
            used = 0
    out.append((start, high, page))
    return out


def diff_versions(
    mine: Iterable[VersionRecord], theirs: Iterable[tuple[str, int, str]]
) -> tuple[list[str], list[str]]:
    """What to give and what to ask for, comparing this node's records with a peer's list.

    Returns the keys whose version here is newer than the peer's or missing there, and the
    keys whose version there is newer or missing here.
    """
    other = {key: (version, writer) for key, version, writer in theirs}
    give: list[str] = []
    wanted: list[str] = []
    for _, key, version, writer in mine:
        there = other.pop(key, None)
        if there is None or version_wins(version, writer, *there):
            give.append(key)
        elif version_wins(there[0], there[1], version, writer):
            wanted.append(key)
    wanted.extend(other)
    return give, wanted
