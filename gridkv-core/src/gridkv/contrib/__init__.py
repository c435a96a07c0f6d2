"""Integrations of GridKV with frameworks: :mod:`gridkv.contrib.django`, a Django cache backend."""
