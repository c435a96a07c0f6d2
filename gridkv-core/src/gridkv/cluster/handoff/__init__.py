"""Handoff: partitions move to their new replicas when the view changes."""
