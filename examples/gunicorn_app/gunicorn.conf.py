"""gunicorn settings of the example: four workers that share one GridKV cache.

Nothing here is needed for the workers to find each other (``GridKV.for_workers`` does it);
the hook only joins the group before a worker takes its first request, instead of during it.
Works the same with ``--preload``. A worker that exits (SIGTERM, a reload with SIGHUP,
``max_requests``) leaves the group gracefully through Python's exit handlers.
"""

from typing import Any

import gridkv

bind = "127.0.0.1:8000"
workers = 4


def post_worker_init(worker: Any) -> None:
    # The object the application made: for_workers with the same name (and no other
    # configuration) returns it.
    cache = gridkv.GridKV.for_workers("example")
    try:
        cache.wait_ready(timeout=20)
    except gridkv.NotReady as exc:  # serve anyway: an error here would stop gunicorn
        worker.log.warning("serving before the cache group settled: %s", exc)
