"""Requests to the example app through Django's test client, then what the cache holds.

    python examples/django_app/demo.py

(``python examples/django_app/manage.py runserver`` serves the same app over HTTP.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()
    from django.core.cache import cache
    from django.test import Client

    client = Client()
    for url in ("/", "/", "/", "/report", "/report"):
        renders = cache.get("renders", 0)
        body = client.get(url).content.decode()
        from_cache = url == "/report" and cache.get("renders") == renders
        print(f"GET {url:<9}-> {body}" + (" (a cached response)" if from_cache else ""))
    kv = cache.kv  # this process's GridKV node behind the cache
    print(f"cache: node {kv.node_id}, {kv.stats().cluster.cluster_size} member(s)")
    for key in sorted(kv.keys()):
        print(f"  {key}")


if __name__ == "__main__":
    main()
