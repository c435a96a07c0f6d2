"""One cache per host: the example gunicorn app (examples/gunicorn_app) run by real gunicorn
with 4 workers, with and without --preload. The workers form one GridKV cluster over
127.0.0.1 through ``GridKV.for_workers``; a key written through one worker is read through
every other; a worker stopped with SIGTERM and a reload (SIGHUP) leave gracefully, the key
survives them, and the group is back to 4; stopping the master leaves no process and no
member file behind.

Requests reach every worker through a barrier in the cache (``/_gather``, added by a small
wrapper of the example app): gunicorn's sync workers serve one request at a time, so 4
requests that each wait for the others can only finish when 4 different workers hold one.
Needs the tcp transport (the nox session of the memory transport skips it).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gridkv_transport_tcp")
gunicorn_config = pytest.importorskip("gunicorn.config")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the workers' parents in /proc"
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gunicorn_app"
WORKERS = 4
#: Seconds any one wait of these tests may take.
DEADLINE = 30.0

# The example app, plus /_gather?tag=T&n=N[&key=K]: each request takes a ticket, writes its
# worker's pid under it, and waits until N requests have; then it answers with the pids all
# N wrote, the value of K it reads, and its worker's view of the group.
GATHER_APP = textwrap.dedent(
    '''
    """The example app, plus a barrier through the cache for the tests."""

    import json
    import os
    import time
    from urllib.parse import parse_qs

    from app import application as example, cache, status


    def application(environ, start_response):
        if environ.get("PATH_INFO") != "/_gather":
            return example(environ, start_response)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        tag, n, key = query["tag"], int(query["n"]), query.get("key")
        ticket = cache.incr(f"{tag}:tickets")
        cache.set(f"{tag}:{ticket}", str(os.getpid()).encode())
        cache.incr(f"{tag}:done")
        deadline = time.monotonic() + 15
        while cache.incr(f"{tag}:done", 0) < n:  # on the key's owner: no cached copy
            if time.monotonic() > deadline:
                start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
                return [f"only {cache.incr(f'{tag}:done', 0)} of {n} came".encode()]
            time.sleep(0.005)
        seen = sorted(int(cache.get(f"{tag}:{i}") or b"0") for i in range(1, n + 1))
        value = None if key is None else cache.get(key)
        body = {**status(), "seen": seen, "value": value and value.decode()}
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [data]
    '''
)


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(what: str, check: Callable[[], object], timeout: float = DEADLINE) -> None:
    """Return once ``check()`` is true (checked every 50 ms); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def parent_of(pid: int) -> int:
    """The parent of ``pid`` (Linux: /proc); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


class Server:
    """gunicorn serving the example app, started by the test; stopped by its PID."""

    def __init__(self, tmp_path: Path, *, preload: bool) -> None:
        (tmp_path / "gather_app.py").write_text(GATHER_APP)
        self.runtime = tmp_path / "run"
        self.log_path = tmp_path / "gunicorn.log"
        self.tmp_path = tmp_path
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(EXAMPLE / "gunicorn.conf.py"),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            str(WORKERS),
            "--graceful-timeout",
            "20",
            "--pythonpath",
            f"{EXAMPLE},{tmp_path}",
            *(["--preload"] if preload else []),
        ]
        if any(s.name == "control_socket_disable" for s in gunicorn_config.KNOWN_SETTINGS):
            args.append("--no-control-socket")  # recent gunicorn: none in the user's home
        args.append("gather_app:application")
        env = {**os.environ, "GRIDKV_RUNTIME_DIR": str(self.runtime)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=EXAMPLE, env=env, stdout=log, stderr=log)
        #: Every worker pid seen answering.
        self.workers: set[int] = set()
        self.port = 0
        self.port = self._listening_port()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _listening_port(self) -> int:
        found: list[int] = []

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited at start:\n{self.log()}")
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
            if match:
                found.append(int(match.group(1)))
            return bool(found)

        wait_for("gunicorn listens", listening)
        return found[0]

    def status(self) -> dict[str, Any]:
        code, body = request(self.port, "GET", "/status")
        assert code == 200, body
        answer: dict[str, Any] = json.loads(body)
        self.workers.add(answer["pid"])
        return answer

    def gather(self, tag: str, key: str | None = None) -> list[dict[str, Any]]:
        """One answer from each of WORKERS different workers (see the module's docstring)."""
        path = f"/_gather?tag={tag}&n={WORKERS}" + (f"&key={key}" if key else "")
        with ThreadPoolExecutor(WORKERS) as pool:
            answers = list(pool.map(lambda _: request(self.port, "GET", path), range(WORKERS)))
        bodies = [json.loads(body) for code, body in answers if code == 200]
        assert len(bodies) == WORKERS, f"{answers}\n{self.log()}"
        self.workers.update(b["pid"] for b in bodies)
        return bodies

    def stop(self, timeout: float = DEADLINE) -> int:
        """Stop the master with SIGTERM (as a process manager does) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"gunicorn did not stop within {timeout:g}s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the master and the workers it started that are left (a failed test)."""
        ours = str(self.tmp_path)
        for pid in [self.proc.pid, *sorted(self.workers)]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if ours.encode() in cmdline:  # still a process of this server, not a reused pid
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def member_files(self) -> list[str]:
        return sorted(p.name for p in (self.runtime / "example").glob("node-*.json"))


@pytest.fixture(params=[False, True], ids=["fork", "preload"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path, preload=request.param)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.kill()


def wait_for_group(server: Server, not_from: set[int]) -> None:
    """Wait until a worker none of ``not_from`` sees WORKERS members alive, none of those."""

    def settled() -> bool:
        answer = server.status()
        return (
            answer["pid"] not in not_from
            and answer["ready"]
            and answer["alive"] == WORKERS
            and not {str(pid) for pid in not_from} & _alive_pids(answer)
        )

    wait_for(f"{WORKERS} workers in the group (not {sorted(not_from)})", settled)


def check_group(
    server: Server, tag: str, *, not_from: set[int], key: str, value: str | None
) -> list[int]:
    """One request on each of WORKERS workers, none of ``not_from``: each sees all of them
    alive, reads what each of them wrote, and reads ``value`` under ``key``.

    Returns the workers' pids.
    """
    bodies = server.gather(tag, key)
    pids = sorted(b["pid"] for b in bodies)
    assert len(set(pids)) == WORKERS, bodies  # one answer from each worker
    assert not set(pids) & not_from, bodies
    assert [(b["seen"], b["value"]) for b in bodies] == [(pids, value)] * WORKERS, bodies
    assert [b["alive"] for b in bodies] == [WORKERS] * WORKERS, bodies
    return pids


def _alive_pids(answer: dict[str, Any]) -> set[str]:
    return {
        node_id.rpartition("-")[2]
        for node_id, state in answer["members"].items()
        if state in ("alive", "suspect")
    }


def test_four_workers_share_one_cache_and_leave_gracefully(server: Server) -> None:
    master = server.proc.pid
    wait_for("a worker is ready", lambda: server.status()["ready"])
    assert request(server.port, "PUT", "/kv/greeting", b"hello")[0] == 204
    wait_for_group(server, not_from=set())
    first = check_group(server, "first", not_from=set(), key="greeting", value="hello")
    assert all(parent_of(pid) == master for pid in first)

    # SIGTERM to one worker: it leaves (its peers see "left", not "dead"), gunicorn starts
    # another, which joins; the keys the stopped one held were handed on.
    stopped = first[0]
    os.kill(stopped, signal.SIGTERM)
    wait_for("the stopped worker exits", lambda: gone(stopped))
    wait_for_group(server, not_from={stopped})
    states = server.status()["members"]
    assert [s for n, s in states.items() if n.endswith(f"-{stopped}")] == ["left"], states
    survivors = check_group(server, "after-term", not_from={stopped}, key="greeting", value="hello")

    # A reload: gunicorn starts 4 new workers and stops the old ones at once; the old ones
    # hand their keys to the new ones that joined by then, and when none has, the cache
    # starts empty (docs/workers.md). Either way the new group works the same.
    server.proc.send_signal(signal.SIGHUP)
    wait_for_group(server, not_from=set(survivors))
    wait_for("the old workers exit", lambda: all(gone(pid) for pid in survivors))
    assert request(server.port, "PUT", "/kv/after-reload", b"again")[0] == 204
    reloaded = check_group(
        server, "after-hup", not_from=set(survivors), key="after-reload", value="again"
    )
    assert all(parent_of(pid) == master for pid in reloaded)

    # Stopping the master stops every worker; each removed its member file.
    assert server.stop() == 0
    assert [pid for pid in server.workers if not gone(pid)] == []
    assert server.member_files() == []
    log = server.log()
    assert "Traceback" not in log, log
    assert "serves before it joined" not in log, log
    assert "settled" not in log, log
