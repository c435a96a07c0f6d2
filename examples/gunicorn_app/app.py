"""A WSGI app whose gunicorn workers share one GridKV cache: ``GridKV.for_workers``.

Every worker process of this app on this host joins the group "example" over 127.0.0.1; a key
written through one worker is read through any other. Run it with the settings beside it::

    gunicorn -c gunicorn.conf.py app:application

- ``GET /`` counts visits in the shared cache and says which worker answered;
- ``PUT /kv/<key>`` stores the request's body, ``GET /kv/<key>`` reads it (404 when missing),
  ``DELETE /kv/<key>`` deletes it;
- ``GET /status`` is this worker's view of the group, as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

import gridkv

# Made at import time, even in gunicorn's master under --preload: the node itself is made in
# each worker, on first use (gunicorn.conf.py makes it before the worker serves).
cache = gridkv.GridKV.for_workers("example")


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    if path == "/" and method == "GET":
        visits = cache.incr("visits")
        return reply(start_response, "200 OK", f"visit {visits}, served by worker {os.getpid()}\n")
    if path == "/status" and method == "GET":
        return reply(start_response, "200 OK", json.dumps(status()), "application/json")
    if path.startswith("/kv/") and len(path) > 4:
        key = path[4:]
        if method == "GET":
            value = cache.get(key)
            if value is None:
                return reply(start_response, "404 Not Found", f"no key {key!r}\n")
            return reply(start_response, "200 OK", value, "application/octet-stream")
        if method == "PUT":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            cache.set(key, environ["wsgi.input"].read(length))
            return reply(start_response, "204 No Content", b"")
        if method == "DELETE":
            cache.delete(key)
            return reply(start_response, "204 No Content", b"")
    return reply(start_response, "404 Not Found", "not found\n")


def status() -> dict[str, object]:
    """This worker's view of the group: its node, and each member's state."""
    cluster = cache.stats().cluster
    return {
        "pid": os.getpid(),
        "node_id": cache.node_id,
        "ready": cluster.ready,
        "alive": cluster.healthy_nodes,
        "members": {m.node_id: m.state for m in cluster.members},
    }


def reply(
    start_response: StartResponse, status: str, body: str | bytes, kind: str = "text/plain"
) -> list[bytes]:
    data = body.encode() if isinstance(body, str) else body
    start_response(
        status,
        [
            ("Content-Type", kind),
            ("Content-Length", str(len(data))),
            ("X-Worker-Pid", str(os.getpid())),
        ],
    )
    return [data]
