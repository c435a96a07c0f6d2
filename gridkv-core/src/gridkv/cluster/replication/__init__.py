"""Replication: the coordinator of reads and writes, the hot read cache, the tombstone rule."""
