"""The cluster layer: membership, partitioning, replication, anti-entropy and handoff.

Its components receive the narrow context they use (a messaging port, the storage, a view of
the partition table, the clock), never the node; the logic that decides is sans-I/O.
"""
