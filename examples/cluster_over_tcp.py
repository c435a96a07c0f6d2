"""Three processes, one cache: each process is a node over TCP on 127.0.0.1.

Each worker writes its own key and reads the others' once they arrive. Needs
gridkv-transport-tcp (``pip install ./gridkv-transport-tcp``); in a real deployment each
process is a service instance with its own address and a few seed addresses.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import socket
import sys
import threading
import time

import gridkv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(
    index: int,
    addresses: list[str],
    results: multiprocessing.Queue[str],
    done: threading.Barrier,
) -> None:
    with gridkv.GridKV(
        local_node_id=f"worker-{index}",
        local_address=addresses[index],
        seed_addrs=[a for a in addresses if a != addresses[index]],
        disable_auth=True,  # loopback only; until authentication lands
        network={"type": "tcp"},
        log={"level": "error"},
    ) as kv:
        kv.wait_ready(timeout=15)
        kv.set(f"greeting:{index}", f"hello from worker {index}".encode(), consistency="all")
        deadline = time.monotonic() + 15
        seen: dict[int, bytes] = {}
        while len(seen) < len(addresses) and time.monotonic() < deadline:
            for other in range(len(addresses)):
                value = kv.get(f"greeting:{other}", consistency="quorum")
                if value is not None:
                    seen[other] = value
            time.sleep(0.02)
        results.put(f"worker-{index} read {len(seen)} greetings: {sorted(seen.values())[0]!r}...")
        done.wait(30)  # stay up until every worker has read every greeting


def main() -> None:
    if importlib.util.find_spec("gridkv_transport_tcp") is None:
        print("install gridkv-transport-tcp to run this example")
        return
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = context.Queue()
    done = context.Barrier(3)
    workers = [context.Process(target=worker, args=(i, addresses, results, done)) for i in range(3)]
    for p in workers:
        p.start()
    try:
        for _ in workers:
            print(results.get(timeout=30))
    finally:
        for p in workers:
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
