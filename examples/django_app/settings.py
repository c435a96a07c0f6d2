"""Settings of the example Django app: one cache, on GridKV.

The node runs in the Django process itself, alone and over the in-process memory transport,
so the example runs anywhere. A real deployment puts every web server of the fleet in one
cluster over TCP (pip install gridkv-transport-tcp); see the comment below and docs/django.md.
"""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "example-only-not-secret"  # an example's: set your own, kept secret
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "views"
INSTALLED_APPS: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"

CACHES = {
    "default": {
        "BACKEND": "gridkv.contrib.django.GridKVCache",
        # GridKV configuration keys, as gridkv.GridKV(**config) takes them.
        "OPTIONS": {
            "local_node_id": "django-example-1",
            "local_address": "django-example-1:7946",
            "network": {"type": "memory"},
        },
        # In a cluster over TCP, each web server (each worker process) is a node:
        #
        # "OPTIONS": {
        #     "local_address": "10.0.0.5:0",  # this host; port 0: a free port per worker
        #     "seed_addrs": ["10.0.0.5:7946", "10.0.0.6:7946"],
        #     "auth": {"cluster_secret_file": "/etc/gridkv/secret"},  # gridkv keys new
        # },
        #
        # or "LOCATION": "/etc/gridkv/node.yaml", a GridKV configuration file.
        "TIMEOUT": 300,
        "KEY_PREFIX": "example",
    }
}
