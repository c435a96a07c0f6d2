"""The in-process "memory" transport, with seeded fault injection.

Nodes in one process reach each other through a :class:`MemoryNetwork` by address, any string.
It is a real transport, used by simulations and by applications that run several nodes in one
process, and it can make the network misbehave on purpose: drop a fraction of frames, delay
them, or cut the network in two. Every random choice comes from the network's own seeded
:class:`random.Random`, so a run with the same seed and the same sequence of sends makes the
same choices.

Timing uses the event loop's clock (``loop.call_later``), so a loop with a virtual clock makes
delays and time-outs virtual too. Nodes may run on different event loops (each
:class:`gridkv.GridKV` has its own loop thread): frames cross loops with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gridkv.base.errors import PeerTimeout, PeerUnavailable, ShuttingDown
from gridkv.transport.base import (
    Handler,
    Handshake,
    TransportCounters,
    TransportStats,
    check_outbound,
)

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = ["MemoryNetwork", "MemoryTransport"]

# Timers may fire up to the clock's resolution early; waits shorter than this are done.
_EPSILON = 1e-6


class MemoryNetwork:
    """A set of in-process endpoints and the faults between them.

    :param seed: seed of the random choices (loss and delay).
    :param loss: fraction of frames dropped, 0 to 1.
    :param delay: ``(low, high)`` seconds; each frame is delayed uniformly in that range.
    """

    _default: MemoryNetwork | None = None
    _default_lock = threading.Lock()

    def __init__(self, seed: int = 0, *, loss: float = 0.0, delay: tuple[float, float] = (0, 0)):
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._endpoints: dict[str, MemoryTransport] = {}
        self._blocked: set[tuple[str, str]] = set()
        self.loss = 0.0
        self.delay = (0.0, 0.0)
        self.set_faults(loss=loss, delay=delay)
        #: Frames dropped by loss or partitions so far.
        self.dropped = 0

    @classmethod
    def default(cls) -> MemoryNetwork:
        """The process-wide network that ``network.type = "memory"`` nodes join."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = MemoryNetwork()
            return cls._default

    def set_faults(
        self, *, loss: float | None = None, delay: tuple[float, float] | None = None
    ) -> None:
        """Change the loss rate and/or the delay range."""
        if loss is not None:
            if not 0.0 <= loss <= 1.0:
                raise ValueError(f"loss must be between 0 and 1, got {loss}")
            self.loss = loss
        if delay is not None:
            low, high = delay
            if not 0 <= low <= high:
                raise ValueError(f"delay must be (low, high) with 0 <= low <= high, got {delay}")
            self.delay = (float(low), float(high))

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut every link between the addresses of ``side_a`` and those of ``side_b``."""
        a, b = list(side_a), list(side_b)
        with self._lock:
            for x in a:
                for y in b:
                    self._blocked.add((x, y))
                    self._blocked.add((y, x))

    def block(self, src: str, dst: str) -> None:
        """Cut the link from ``src`` to ``dst`` only (an asymmetric fault)."""
        with self._lock:
            self._blocked.add((src, dst))

    def heal(self) -> None:
        """Restore every cut link."""
        with self._lock:
            self._blocked.clear()

    def addresses(self) -> list[str]:
        """Addresses with a started endpoint."""
        with self._lock:
            return sorted(self._endpoints)

    def _attach(self, transport: MemoryTransport) -> None:
        with self._lock:
            current = self._endpoints.get(transport.local_address)
            if current is not None and current is not transport:
                raise PeerUnavailable(
                    f"address {transport.local_address!r} is already in use on this memory "
                    "network; give each node its own local_address"
                )
            self._endpoints[transport.local_address] = transport

    def _detach(self, transport: MemoryTransport) -> None:
        with self._lock:
            if self._endpoints.get(transport.local_address) is transport:
                del self._endpoints[transport.local_address]

    def _lookup(self, address: str) -> MemoryTransport | None:
        return self._endpoints.get(address)

    def _fate(self, src: str, dst: str) -> float | None:
        """``None`` when the frame from ``src`` to ``dst`` is dropped, else its delay."""
        with self._lock:
            if (src, dst) in self._blocked:
                self.dropped += 1
                return None
            if self.loss and self._rng.random() < self.loss:
                self.dropped += 1
                return None
            low, high = self.delay
            return self._rng.uniform(low, high) if high else 0.0


class MemoryTransport:
    """An endpoint on a :class:`MemoryNetwork`.

    :param address: this node's address on the network.
    :param network: the network; the process-wide default when ``None``.
    :param timeout: default seconds a request waits for its answer.
    :param max_frame_bytes: largest frame sent.
    """

    name = "memory"

    def __init__(
        self,
        address: str,
        network: MemoryNetwork | None = None,
        *,
        timeout: float = 2.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._address = address
        self.network = network or MemoryNetwork.default()
        self._timeout = timeout
        self._max = max_frame_bytes
        self._handler: Handler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Future[bytes]] = set()
        self._stalled_until = 0.0
        self.counters = TransportCounters()

    @classmethod
    def from_options(cls, options: Options) -> MemoryTransport:
        """Build a transport on the default network from a node's options."""
        return cls(
            options.local_address,
            timeout=options.network.read_timeout,
            max_frame_bytes=options.network.max_frame_bytes,
        )

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""
        return self._address

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        """Attach to the network; inbound frames go to ``handler``.

        ``handshake`` is ignored: there are no connections, and frames between nodes in one
        process are authenticated one by one above the transport.

        :returns: ``False`` (the handshake is not run).
        """
        if self._closed:
            raise ShuttingDown(f"memory transport {self._address!r} is closed")
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self.network._attach(self)
        return False

    def _check_out(self, address: str, payload: bytes) -> MemoryTransport:
        check_outbound(
            self.name, self._address, self._closed, address, len(payload), self._max, self.counters
        )
        peer = self.network._lookup(address)
        if peer is None or peer._closed or peer._loop is None:
            self.counters.errors += 1
            raise PeerUnavailable(f"no node is listening at {address!r} on the memory network")
        return peer

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` and return the answer."""
        peer = self._check_out(address, payload)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._pending.add(future)
        self.counters.requests_sent += 1
        self.counters.bytes_sent += len(payload)
        fate = self.network._fate(self._address, address)
        if fate is not None:
            peer._deliver(self, payload, fate, future, loop)
        wait = self._timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            self.counters.errors += 1
            if self._closed:
                raise ShuttingDown(f"memory transport {self._address!r} is closed") from None
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s") from None
        finally:
            self._pending.discard(future)

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way."""
        peer = self._check_out(address, payload)
        self.counters.messages_sent += 1
        self.counters.bytes_sent += len(payload)
        fate = self.network._fate(self._address, address)
        if fate is not None:
            peer._deliver(self, payload, fate, None, None)

    def _deliver(
        self,
        sender: MemoryTransport,
        payload: bytes,
        delay: float,
        reply_to: asyncio.Future[bytes] | None,
        reply_loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        loop = self._loop
        if loop is None:
            return

        def arrive() -> None:
            if self._closed or self._handler is None:
                return
            wait = self._stalled_until - loop.time()
            if wait > _EPSILON:
                # A stalled process reads its socket only when it wakes up.
                loop.call_later(wait, arrive)
                return
            task = loop.create_task(self._serve(sender, payload, reply_to, reply_loop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def schedule() -> None:
            if delay > 0:
                loop.call_later(delay, arrive)
            else:
                arrive()

        try:
            if loop is _running_loop():
                schedule()
            else:
                loop.call_soon_threadsafe(schedule)
        except RuntimeError:  # the peer's loop has been closed: the frame is lost
            return

    async def _serve(
        self,
        sender: MemoryTransport,
        payload: bytes,
        reply_to: asyncio.Future[bytes] | None,
        reply_loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        assert self._handler is not None
        self.counters.bytes_received += len(payload)
        if reply_to is None:
            self.counters.messages_received += 1
        else:
            self.counters.requests_received += 1
        try:
            answer = self._handler(sender.local_address, payload, None)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            self.counters.errors += 1
            return
        if reply_to is None or reply_loop is None or answer is None:
            return
        fate = self.network._fate(self._address, sender.local_address)
        if fate is None:
            return
        self.counters.bytes_sent += len(answer)

        def resolve() -> None:
            if not reply_to.done():
                reply_to.set_result(answer)

        def schedule() -> None:
            if fate > 0:
                reply_loop.call_later(fate, resolve)
            else:
                resolve()

        try:
            if reply_loop is _running_loop():
                schedule()
            else:
                reply_loop.call_soon_threadsafe(schedule)
        except RuntimeError:
            return

    def stall(self, seconds: float) -> None:
        """Hold inbound frames for ``seconds``, as a paused process would (simulations)."""
        loop = self._loop or asyncio.get_running_loop()
        self._stalled_until = loop.time() + seconds

    async def close(self) -> None:
        """Detach from the network and fail requests still waiting; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.network._detach(self)
        for future in list(self._pending):
            if not future.done():
                future.set_exception(
                    ShuttingDown(f"memory transport {self._address!r} closed during the request")
                )
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> TransportStats:
        """Current counters."""
        return self.counters.snapshot(self.name, self._address, self._address)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
