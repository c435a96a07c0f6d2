"""Anti-entropy: co-replicas compare digests and exchange what differs."""
