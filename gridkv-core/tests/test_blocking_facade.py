"""The blocking facade's promises: forks, its own loop thread, bounded waits, failed starts,
arguments that cannot be read, and cancellations. Exit is tested with real processes in
tests/test_process_exit.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from gridkv import (
    AsyncGridKV,
    GridKV,
    GridKVError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    NotReady,
    PeerTimeout,
    PeerUnavailable,
    ShuttingDown,
    hookimpl,
)
from gridkv.api.blocking import WAIT_MARGIN
from gridkv.plugins import Plugins
from gridkv.testing.forking import in_forked_child
from gridkv.testing.transports import node_options, transport_under_test
from gridkv.testing.waiting import wait_for
from gridkv.transport import MemoryNetwork, MemoryTransport
from gridkv.wire import codec
from gridkv.wire.messages import GetRequest, WatchedGetRequest

_ids = count()


def single(**overrides: Any) -> dict[str, Any]:
    """Options of a single node on the transport under test (GRIDKV_TEST_TRANSPORT)."""
    base = node_options(f"facade{next(_ids)}")
    base.update(overrides)
    return base


def outcome_within(seconds: float, call: Callable[[], object]) -> tuple[float, object]:
    """Run ``call`` on a thread of its own; return (seconds taken, result or exception).

    A call still running after ``seconds`` fails the test (and its thread is left behind,
    a daemon): that is how these tests see a hang without hanging themselves.
    """
    box: list[object] = []
    started = time.monotonic()

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"the call is still waiting after {seconds:g}s")
    return time.monotonic() - started, box[0]


def gridkv_threads(node_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"gridkv-{node_id}"]


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reaches sys.unraisablehook during the test (exceptions in __del__, finalizers)."""
    seen: list[str] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value}")
    )
    return seen


# -- a fork ------------------------------------------------------------------------------------


@contextlib.contextmanager
def pair(
    net: MemoryNetwork, options: dict[str, Any], transport_a: MemoryTransport | None = None
) -> Iterator[tuple[GridKV, GridKV]]:
    """Two blocking nodes on ``net``: ``a``, and ``b`` joined through it; both ready."""
    with (
        GridKV(
            local_node_id="a",
            local_address="a:1",
            transport=transport_a or MemoryTransport("a:1", net),
            **options,
        ) as a,
        GridKV(
            local_node_id="b",
            local_address="b:1",
            seed_addrs=["a:1"],
            transport=MemoryTransport("b:1", net),
            **options,
        ) as b,
    ):
        b.wait_ready(timeout=10)
        wait_for("a sees b", lambda: len(a.node.membership.live_ids()) == 2)
        yield a, b


class _Tripwire:
    """Stands in for the loop, thread and locks in the child: any use of it is recorded."""

    def __init__(self, used: list[str]) -> None:
        self._used = used

    def __getattr__(self, name: str) -> Any:
        self._used.append(name)
        raise AssertionError(f"the child touched {name}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_gridkv_made_before_a_fork_refuses_every_call_in_the_child() -> None:
    with GridKV(**single()) as kv:
        kv.set("held", b"parent's")
        assert kv.node.local_reads[kv.node.table.partition_of("held")]  # the fast path serves it

        def use_in_child() -> Iterator[tuple[str, str]]:
            calls: dict[str, Callable[[], object]] = {
                "get (local fast path)": lambda: kv.get("held"),
                "get at quorum": lambda: kv.get("held", consistency="quorum"),
                "set": lambda: kv.set("k", b"v"),
                "delete": lambda: kv.delete("held"),
                "health_check": kv.health_check,
                "stats": kv.stats,
                "wait_ready": lambda: kv.wait_ready(timeout=1),
            }
            for name, call in calls.items():
                try:
                    yield name, f"returned {call()!r}"
                except Exception as exc:
                    yield name, f"{type(exc).__name__}: {exc}"
            # close() is a quiet no-op that touches neither the loop, nor its thread, nor a lock.
            used: list[str] = []
            for attribute in ("_runner", "_close_lock", "_submit_lock"):
                setattr(kv, attribute, _Tripwire(used))
            try:
                kv.close()
                kv.close(timeout=1)
                yield "close", "returned"
            except Exception as exc:
                yield "close", f"{type(exc).__name__}: {exc}"
            yield "touched", ",".join(used)

        report = in_forked_child(use_in_child, timeout=15)

        for name in ("get (local fast path)", "get at quorum", "set", "delete"):
            assert report[name].startswith("ShuttingDown: GridKV node"), (name, report)
        for name in ("health_check", "stats", "wait_ready"):
            assert report[name].startswith("ShuttingDown: GridKV node"), (name, report)
        message = report["wait_ready"]
        assert f"created in process {os.getpid()}" in message
        assert "Create the GridKV in the child process" in message and "post_fork" in message
        assert report["close"] == "returned"
        assert report["touched"] == ""

        # The parent's node never noticed.
        assert kv.get("held") == b"parent's"
        kv.set("after", b"1")
        kv.wait_ready(timeout=5)
        assert kv.get("after") == b"1"
        kv.health_check()


# -- the node's own loop thread ----------------------------------------------------------------


class _OnTheLoopThread:
    """A plugin that, when peer "b" turns alive, uses the GridKV from the loop thread's hook."""

    def __init__(self) -> None:
        self.kv: GridKV | None = None
        self.results: dict[str, str] = {}
        self.done = threading.Event()
        self.scheduled: asyncio.Task[bytes | None] | None = None

    @hookimpl
    def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
        kv = self.kv
        if kv is None or member.node_id != "b" or new != "alive" or self.done.is_set():
            return
        calls: dict[str, Callable[[], object]] = {
            "wait_ready": lambda: kv.wait_ready(timeout=1),
            "get at quorum": lambda: kv.get("k", consistency="quorum"),
            "set at all": lambda: kv.set("k", b"v2", consistency="all"),
            "close": kv.close,
            "local get": lambda: kv.get("k"),
        }
        for name, call in calls.items():
            try:
                self.results[name] = f"returned {call()!r}"
            except Exception as exc:
                self.results[name] = f"{type(exc).__name__}: {exc}"
        # What the error advises: schedule the work on the loop instead of waiting for it.
        self.scheduled = node.loop.create_task(
            AsyncGridKV.for_node(node).get("k", consistency="quorum")
        )
        self.done.set()


def test_a_blocking_call_on_the_nodes_own_loop_thread_raises_instead_of_deadlocking(
    plugins: Plugins,
) -> None:
    net = MemoryNetwork()
    hook = _OnTheLoopThread()
    plugins.register(hook, name="on-the-loop-thread")
    common: dict[str, Any] = {"disable_auth": True, "replica_count": 2}
    a = GridKV(
        local_node_id="a",
        local_address="a:1",
        transport=MemoryTransport("a:1", net),
        plugins=plugins,
        **common,
    )
    try:
        a.set("k", b"v")
        hook.kv = a
        with GridKV(
            local_node_id="b",
            local_address="b:1",
            seed_addrs=["a:1"],
            transport=MemoryTransport("b:1", net),
            plugins=Plugins(load_entry_points=False),
            **common,
        ):
            assert hook.done.wait(10), "the hook did not finish: the loop thread is stuck"
            for name in ("wait_ready", "get at quorum", "set at all", "close"):
                result = hook.results[name]
                assert result.startswith("GridKVError: "), (name, result)
                assert "own event-loop thread" in result
                assert "AsyncGridKV.for_node(node)" in result
            # Work that never needs the loop still runs there.
            assert hook.results["local get"] == "returned b'v'"
            # The advice works: the scheduled read finishes.
            task = hook.scheduled
            assert task is not None
            wait_for("the scheduled read finishes", task.done)
            assert task.result() == b"v"
            assert a.get("k", consistency="quorum") == b"v"
    finally:
        a.close(timeout=1)


# -- every wait is bounded ---------------------------------------------------------------------


class _PatientTransport(MemoryTransport):
    """A transport that waits as long as it takes for every answer (its time-out never fires),
    and counts the reads (GetRequest, WatchedGetRequest) still waiting."""

    reads_sent = 0
    reads_waiting = 0

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        read = isinstance(codec.decode(payload), GetRequest | WatchedGetRequest)
        self.reads_sent += read
        self.reads_waiting += read
        try:
            return await super().request(address, payload, timeout=86400.0)
        finally:
            self.reads_waiting -= read


def test_a_read_from_a_peer_that_never_answers_ends_in_peer_timeout_within_the_bound() -> None:
    net = MemoryNetwork()
    options: dict[str, Any] = {
        "disable_auth": True,
        "replica_count": 1,
        "read_timeout": 0.1,
        "network": {"timeout": 0.1},
    }
    patient = _PatientTransport("a:1", net)
    with pair(net, options, patient) as (a, _):
        table = a.node.ensure_table()
        key = next(
            k
            for k in (f"k{i}" for i in range(1000))
            if list(table.owners(table.partition_of(k))) == ["b"]
        )
        net.block("a:1", "b:1")  # b never hears a's requests, so never answers them

        bound = 0.1 + 1 * (0.1 + 0.1) + WAIT_MARGIN
        took, result = outcome_within(bound + 10, lambda: a.get(key))

        assert patient.reads_sent == 1  # the read did reach the transport, and waited there
        assert isinstance(result, PeerTimeout), result
        assert isinstance(result, TimeoutError)
        assert f"get of key {key!r} on node 'a' did not finish within" in str(result)
        assert bound - 0.05 <= took <= bound + 1.5
        wait_for("the abandoned request is cancelled", lambda: patient.reads_waiting == 0, 5)
        net.heal()


class _NeverListens(MemoryTransport):
    async def start(self, handler: Any, handshake: Any = None) -> bool:
        await asyncio.Event().wait()
        return False


class _BrokenTransport(MemoryTransport):
    async def start(self, handler: Any, handshake: Any = None) -> bool:
        raise RuntimeError("this transport is broken")


def test_a_start_that_never_finishes_raises_not_ready_within_the_bound_and_leaves_nothing(
    unraisable: list[str],
) -> None:
    node_id = f"stuck{next(_ids)}"
    took, result = outcome_within(
        30,
        lambda: GridKV(
            local_node_id=node_id,
            network={"timeout": 0.1},
            transport=_NeverListens(f"{node_id}:1", MemoryNetwork()),
        ),
    )
    assert isinstance(result, NotReady), result
    assert isinstance(result, TimeoutError)
    assert "start on node" in str(result)
    assert took <= 0.1 + WAIT_MARGIN + 3
    assert gridkv_threads(node_id) == []
    gc.collect()
    assert unraisable == []


def test_a_start_that_fails_leaves_no_thread_and_nothing_that_warns(
    unraisable: list[str],
) -> None:
    node_id = f"broken{next(_ids)}"
    with pytest.raises(GridKVError, match="this transport is broken") as info:
        GridKV(local_node_id=node_id, transport=_BrokenTransport(f"{node_id}:1", MemoryNetwork()))
    assert repr(info.value.__cause__) == "RuntimeError('this transport is broken')"
    del info  # its traceback holds the half-made instance; let it go
    assert gridkv_threads(node_id) == []
    gc.collect()
    assert unraisable == []


@pytest.mark.skipif(transport_under_test() != "tcp", reason="a busy port is a TCP matter")
def test_a_busy_port_raises_the_transports_error_and_leaves_no_thread_and_nothing_that_warns(
    unraisable: list[str],
) -> None:
    with GridKV(**single()) as first:
        address = first.stats().network.local_address
        node_id = f"second{next(_ids)}"
        with pytest.raises(PeerUnavailable, match="address already in use"):
            GridKV(local_node_id=node_id, local_address=address, network={"type": "tcp"})
        assert gridkv_threads(node_id) == []
        gc.collect()
        assert unraisable == []


# -- arguments that cannot be read -------------------------------------------------------------


class _Hostile(str):
    """A str whose own methods all fail; GridKV must use only its characters."""

    def __str__(self) -> str:
        raise RuntimeError("__str__")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__")

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("encode")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__")

    def __hash__(self) -> int:
        raise RuntimeError("__hash__")


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("__repr__")


class _BadBytes(bytes):
    def __bytes__(self) -> bytes:
        raise RuntimeError("__bytes__")


class _BadInt(int):
    def __float__(self) -> float:
        raise RuntimeError("__float__")


class _BadDelta(timedelta):
    def total_seconds(self) -> float:
        raise RuntimeError("total_seconds")


def released() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda kv: kv.set("k", released()), InvalidValue, "cannot be read: ValueError"),
        (lambda kv: kv.set("k", b"v", ttl=10**400), InvalidArgument, "longer than 100 years"),
        (lambda kv: kv.set("k", b"v", ttl=math.inf), InvalidArgument, "longer than 100 years"),
        (lambda kv: kv.set("k", b"v", ttl=_BadInt(5)), InvalidArgument, "cannot be read as"),
        (lambda kv: kv.set("k", b"v", ttl=_BadDelta(5)), InvalidArgument, "cannot be read as"),
        (lambda kv: kv.set("k", b"v", ttl=_Unprintable()), InvalidArgument, "_Unprintable obj"),
        (lambda kv: kv.get(_Unprintable()), InvalidKey, "got _Unprintable: <_Unprintable obj"),
        (lambda kv: kv.get("k", consistency=_Unprintable()), InvalidArgument, "consistency"),
        (lambda kv: kv.wait_ready(timeout="soon"), InvalidArgument, "timeout must be a number"),
        (lambda kv: kv.wait_ready(timeout=-1), InvalidArgument, "timeout must be a number"),
        (lambda kv: kv.wait_ready(timeout=math.nan), InvalidArgument, "timeout must be a numb"),
        (lambda kv: kv.close(timeout=None), InvalidArgument, "close.. timeout must be a number"),
    ],
    ids=[
        "released memoryview",
        "ttl an int too large for a float",
        "ttl infinite",
        "ttl an int whose float fails",
        "ttl a timedelta whose total_seconds fails",
        "ttl whose repr fails",
        "key whose repr fails",
        "consistency whose repr fails",
        "timeout a str",
        "timeout negative",
        "timeout NaN",
        "close timeout None",
    ],
)
def test_arguments_that_cannot_be_read_raise_their_gridkv_error(
    call: Callable[[GridKV], object], error: type[GridKVError], match: str
) -> None:
    with GridKV(**single()) as kv:
        with pytest.raises(error, match=match):
            call(kv)
        kv.health_check()


def test_str_and_bytes_subclasses_are_read_by_their_contents_only() -> None:
    with GridKV(**single(replica_count=1)) as kv:
        kv.set(_Hostile("k"), _BadBytes(b"by buffer"))
        assert kv.get("k") == b"by buffer"
        assert kv.get(_Hostile("k")) == b"by buffer"
        assert kv.get("k", consistency=_Hostile("quorum")) == b"by buffer"
        kv.delete(_Hostile("k"))
        assert kv.get("k") is None
        kv.wait_ready(timeout=10**400)  # as good as forever; ready at once here


def test_a_local_write_whose_loop_closed_under_it_raises_shutting_down() -> None:
    net = MemoryNetwork()
    common: dict[str, Any] = {"disable_auth": True, "replica_count": 2}
    with pair(net, common) as (a, _):
        node = a.node
        live_loop = node.loop
        closed_loop = asyncio.new_event_loop()
        closed_loop.close()
        node.loop = closed_loop  # as if a close on another thread had just ended the loop
        try:
            with pytest.raises(ShuttingDown, match="closed during the write of key 'k'"):
                a.set("k", b"v")  # both nodes hold it: local, then queued for b
        finally:
            node.loop = live_loop


async def test_the_async_api_checks_arguments_the_same_way() -> None:
    async with AsyncGridKV(**single()) as kv:
        with pytest.raises(InvalidValue, match="cannot be read"):
            await kv.set("k", released())
        with pytest.raises(InvalidArgument, match="timeout must be a number"):
            await kv.wait_ready(timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="longer than 100 years"):
            await kv.set("k", b"v", ttl=10**400)


# -- cancellations -----------------------------------------------------------------------------


class _StuckRead:
    """Stands in for ``coordinator.read``: waits on a future the test resolves or cancels."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.entered_here: asyncio.Event | None = None  # for a test on the same loop
        self.inner: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, partition: int, key: str, level: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.inner = self.loop.create_future()
        self.entered.set()
        if self.entered_here is not None:
            self.entered_here.set()
        return await self.inner

    def cancel_inside(self) -> None:
        """Cancel what the read waits on, as the node does to a request when it aborts."""
        assert self.loop is not None and self.inner is not None
        self.loop.call_soon_threadsafe(self.inner.cancel)


def test_a_cancellation_inside_gridkv_reaches_a_blocking_caller_as_peer_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with GridKV(**single(replica_count=1)) as kv:
        read = _StuckRead()
        monkeypatch.setattr(kv.node.coordinator, "read", read)
        box: list[object] = []
        caller = threading.Thread(target=lambda: box.append(_outcome(kv, "k")), daemon=True)
        caller.start()
        assert read.entered.wait(5)
        read.cancel_inside()
        caller.join(5)
        assert box, "the caller is still waiting"
        assert isinstance(box[0], PeerUnavailable), box[0]
        assert "interrupted" in str(box[0]) and "retry" in str(box[0])
        kv.health_check()  # the node is fine


def _outcome(kv: GridKV, key: str) -> object:
    try:
        return kv.get(key, consistency="quorum")
    except BaseException as exc:
        return exc


def test_a_close_under_a_waiting_blocking_caller_ends_the_call_with_shutting_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kv = GridKV(**single(replica_count=1))
    read = _StuckRead()
    monkeypatch.setattr(kv.node.coordinator, "read", read)
    box: list[object] = []
    caller = threading.Thread(target=lambda: box.append(_outcome(kv, "k")), daemon=True)
    caller.start()
    assert read.entered.wait(5)
    kv.close(timeout=1)
    caller.join(3)  # well before the read's own bound
    assert box, "the caller is still waiting after the close"
    assert isinstance(box[0], ShuttingDown), box[0]
    assert "closed while get of key 'k' was waiting" in str(box[0])
    assert not kv._runner.thread.is_alive()


async def test_a_cancellation_inside_gridkv_reaches_an_async_caller_as_peer_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with AsyncGridKV(**single(replica_count=1)) as kv:
        read = _StuckRead()
        read.entered_here = asyncio.Event()
        monkeypatch.setattr(kv.node.coordinator, "read", read)
        call = asyncio.ensure_future(kv.get("k", consistency="quorum"))
        await asyncio.wait_for(read.entered_here.wait(), 5)
        assert read.inner is not None
        read.inner.cancel()
        with pytest.raises(PeerUnavailable, match="interrupted"):
            await call


async def test_cancelling_the_async_callers_own_task_still_raises_cancelled_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with AsyncGridKV(**single(replica_count=1)) as kv:
        read = _StuckRead()
        read.entered_here = asyncio.Event()
        monkeypatch.setattr(kv.node.coordinator, "read", read)
        call = asyncio.ensure_future(kv.get("k", consistency="quorum"))
        await asyncio.wait_for(read.entered_here.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        with pytest.raises(TimeoutError):  # asyncio.timeout relies on the same cancellation
            async with asyncio.timeout(0.05):
                await kv.get("k", consistency="quorum")
