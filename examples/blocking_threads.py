"""The blocking API shared by several threads, the way a threaded web server uses it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gridkv


def handle_request(kv: gridkv.GridKV, n: int) -> bytes | None:
    key = f"page:{n % 50}"
    cached = kv.get(key)
    if cached is None:
        cached = f"rendered page {n % 50}".encode()
        kv.set(key, cached, ttl=30)
    return cached


def main() -> None:
    options = gridkv.Options.from_mapping(
        {"local_node_id": "web-1", "local_address": "web-1:7946", "network": {"type": "memory"}}
    )
    with gridkv.GridKV(options) as kv, ThreadPoolExecutor(max_workers=8) as pool:
        pages = list(pool.map(lambda n: handle_request(kv, n), range(1000)))
        print(f"served {len(pages)} requests; cache holds {kv.stats().storage.keys} pages")


if __name__ == "__main__":
    main()
