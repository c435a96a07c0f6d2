"""A QUIC transport on aioquic: mutual TLS 1.3, one connection per peer, requests on lanes.

Each node dials one QUIC connection (a *link*, :mod:`gridkv_transport_quic._link`) to each
peer it sends to, from a UDP socket of its own connected to the peer (so an ICMP "port
unreachable" fails the dial at once instead of at its time-out), and accepts links on one UDP
socket. Requests are GridKV stream frames on a few long-lived bidirectional streams of the link
(*lanes*), their answers come back on the same lane; one-way frames go in order over one
unidirectional stream per link. Both sides present their node certificate and
check the other's against ``network.ssl.ca_file``, ALPN ``gridkv``; with an authenticator whose
trust root is that CA (``auth.ca_file``), the certificate also names the peer's node id, and
the transport takes the authenticator's handshake over: frames are neither sealed nor MACed
again (TLS protects them). With another trust root, the security layer authenticates the
frames itself, inside TLS.

No 0-RTT: early data can be replayed, and a replayed write or delete is not harmless. No
session resumption either: a resumed session presents no certificate, and a certificate is
what names the peer's node id; links are long-lived, so a handshake is rare.

Limits against a hostile or broken peer, each a counted disconnect (as for tcp): a frame over
``network.max_frame_bytes``; unfinished frames (and stream data aioquic holds past a hole)
over ``network.max_inbound_buffer_bytes`` across the node, or unfinished
``network.read_timeout`` after their first byte; more than ``network.max_output_buffer_bytes``
unacknowledged, or nothing acknowledged for ``network.write_timeout`` while data waits (a peer
that stopped reading, or is gone). QUIC's own flow control holds a writer back when the peer
reads slowly. Links whose handshake is not done within ``network.timeout`` are dropped, and at
most :data:`~gridkv_transport_quic._link.MAX_HALF_OPEN` are held at once. A dialled link
that heard nothing for a third of the QUIC idle time-out (60 s,
:data:`~gridkv_transport_quic._tls.IDLE_TIMEOUT`, fixed: see there why) sends a PING, looked
for twice as often, so only a link whose peer went silent times out; a request timed out with
nothing heard from the peer closes its link at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from typing import TYPE_CHECKING, Any

from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives.serialization import Encoding
from gridkv.base.errors import ConfigError, PeerTimeout, PeerUnavailable, ShuttingDown
from gridkv.transport.base import Handler, Handshake, TransportStats
from gridkv.transport.deadlines import Deadlines

from gridkv_transport_quic._link import Link, Listener, Shared
from gridkv_transport_quic._tls import KEEPALIVE_FRACTION, configurations

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration
    from gridkv.base.options import Options

__all__ = ["QuicTransport", "split_address"]

#: Seconds :meth:`QuicTransport.close` lets links say goodbye.
_CLOSE_GRACE = 1.0


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port).

    :raises PeerUnavailable: not host:port.
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise PeerUnavailable(f"{address!r} is not host:port")
    return host, int(port)


class QuicTransport:
    """The ``quic`` transport.

    :param address: the address peers reach this node at (``host:port``, UDP).
    :param server: the accepting side's QUIC configuration (certificate, CA, ALPN, idle
        time-out).
    :param client: the dialling side's. A dialled link that heard nothing for
        :data:`~gridkv_transport_quic._tls.KEEPALIVE_FRACTION` of the configurations' idle
        time-out sends a PING.
    :param ca_file: the CA file that dialler certificates must chain to.
    :param bind: the address to listen on; ``address`` when ``None``.
    :param dial_timeout: seconds for a handshake.
    :param read_timeout: default seconds to wait for an answer; also the most an inbound
        frame may take from its first byte to its last.
    :param write_timeout: seconds a peer may take nothing while data waits for it.
    :param max_frame_bytes: largest frame sent or accepted.
    :param max_output_buffer_bytes: bytes waiting for one peer to take them, at most.
    :param max_inbound_buffer_bytes: bytes of unfinished inbound frames across links.
    :param reconnect_backoff: first wait after a failed dial before the next one.
    :param reconnect_max_backoff: longest such wait.
    :param max_lanes: request streams per link at most (``network.max_conns``): one more is
        opened whenever each has 32 requests in flight (``_link.BUSY_LANE``).
    """

    name = "quic"

    def __init__(
        self,
        address: str,
        *,
        server: QuicConfiguration,
        client: QuicConfiguration,
        ca_file: str,
        bind: str | None = None,
        dial_timeout: float = 3.0,
        read_timeout: float = 2.0,
        write_timeout: float = 2.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_output_buffer_bytes: int = 64 * 1024 * 1024,
        max_inbound_buffer_bytes: int = 64 * 1024 * 1024,
        reconnect_backoff: float = 0.05,
        reconnect_max_backoff: float = 1.0,
        max_lanes: int = 16,
    ) -> None:
        self._bind = bind or address
        self.max_lanes = max_lanes
        self._server_config = server
        self._client_config = client
        self._shared = Shared(
            address,
            dial_timeout=dial_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            max_frame_bytes=max_frame_bytes,
            max_output_buffer_bytes=max_output_buffer_bytes,
            max_inbound_buffer_bytes=max_inbound_buffer_bytes,
            ca_file=ca_file,
        )
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_max_backoff = reconnect_max_backoff
        self.counters = self._shared.counters
        self._listener: Listener | None = None
        #: address -> the link requests and one-way frames to it go over.
        self._links: dict[str, Link] = {}
        self._dialing: dict[str, asyncio.Task[Link]] = {}
        #: address -> (failed dials in a row, loop time before which none is tried, why)
        self._failures: dict[str, tuple[int, float, str]] = {}
        self._rng = random.Random(f"quic {address}")
        self._keepalive: asyncio.TimerHandle | None = None
        #: Seconds of quiet after which a dialled link sends a PING (keep-alive).
        self.keepalive_after = min(server.idle_timeout, client.idle_timeout) * KEEPALIVE_FRACTION
        #: Links past their guard's lifetime, closing once their requests are answered.
        self._retiring: set[asyncio.Future[Any]] = set()
        #: Resolved when close() has finished (a second close() waits for it).
        self._closing: asyncio.Future[None] | None = None
        #: The time-outs of the requests in flight, sharing timers.
        self._deadlines = Deadlines()

    @classmethod
    def from_options(cls, options: Options) -> QuicTransport:
        """Build the transport a node's options describe.

        :raises ConfigError: no certificates (the message names ``gridkv certs create``), a
            file that cannot be loaded, or an address that is not host:port.
        """
        net = options.network
        for key, value in (
            ("local_address", options.local_address),
            ("network.bind_addr", net.bind_addr),
        ):
            if value:
                try:
                    split_address(value)
                except PeerUnavailable:
                    raise ConfigError(
                        f"config key {key!r}: the quic transport needs host:port (got {value!r})"
                    ) from None
        server, client = configurations(net.ssl, max_frame_bytes=net.max_frame_bytes)
        return cls(
            options.local_address,
            server=server,
            client=client,
            ca_file=net.ssl.ca_file,
            bind=net.bind_addr or None,
            dial_timeout=net.timeout,
            read_timeout=net.read_timeout,
            write_timeout=net.write_timeout,
            max_frame_bytes=net.max_frame_bytes,
            max_output_buffer_bytes=net.max_output_buffer_bytes,
            max_inbound_buffer_bytes=net.max_inbound_buffer_bytes,
            reconnect_backoff=net.reconnect_backoff,
            reconnect_max_backoff=net.reconnect_max_backoff,
            max_lanes=net.max_conns,
        )

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""
        return self._shared.address

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame sent or accepted."""
        return self._shared.max_frame_bytes

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        """Listen on the bind address (UDP); inbound frames go to ``handler``.

        :param handshake: the authenticator's; taken over when its trust root is the CA of
            this node's TLS certificate (then a certificate names its node's id), left to the
            security layer otherwise.
        :returns: whether the transport authenticates the peers itself (frames then reach
            ``handler`` with the sender's node id).
        :raises PeerUnavailable: the address cannot be listened on.
        """
        shared = self._shared
        if shared.closed:
            raise ShuttingDown(f"quic transport {shared.address!r} is closed")
        shared.handler = handler
        own = self._server_config.certificate
        binds = (
            handshake is not None
            and own is not None
            and handshake.binds_certificate(own.public_bytes(Encoding.DER))
        )
        shared.handshake = handshake if binds else None
        host, port = split_address(self._bind)
        loop = asyncio.get_running_loop()
        listener = Listener(shared, self._server_config)
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=(host, port))
        except OSError as exc:
            raise PeerUnavailable(
                f"cannot listen on {self._bind!r} (network.bind_addr or local_address): "
                f"{exc.strerror or exc}"
            ) from None
        self._listener = listener
        if port == 0:
            actual = udp.get_extra_info("sockname")[1]
            advertised, _ = split_address(shared.address)
            shown = f"[{advertised}]" if ":" in advertised else advertised
            shared.address = f"{shown}:{actual}"
        self._keepalive = loop.call_later(self.keepalive_after / 2, self._keep_alive)
        return shared.handshake is not None

    # -- links -------------------------------------------------------------------------

    def _usable(self, address: str) -> Link | None:
        link = self._links.get(address)
        if link is None:
            return None
        if link.gone:
            del self._links[address]
            return None
        if link.guard is not None and link.guard.expired:
            # Past its lifetime or a key rotation: new requests go over a new link; this
            # one closes once its requests are answered.
            del self._links[address]
            self._retire(link)
            return None
        return link

    def _retire(self, link: Link) -> None:
        """Close ``link`` once the requests waiting on it are answered (or time out)."""
        waiting = [f for f in link.pending.values() if not f.done()]
        if not waiting:
            link.close()
            return
        task = asyncio.ensure_future(asyncio.wait(waiting, timeout=self._shared.read_timeout))
        self._retiring.add(task)

        def done(task: asyncio.Future[Any]) -> None:
            self._retiring.discard(task)
            link.close()

        task.add_done_callback(done)

    async def _link(self, address: str, timeout: float) -> Link:
        link = self._usable(address)
        if link is not None:
            return link
        loop = asyncio.get_running_loop()
        failed = self._failures.get(address)
        if failed is not None and loop.time() < failed[1]:
            raise PeerUnavailable(
                f"cannot connect to {address!r}: {failed[2]} (next try after a back-off)"
            )
        task = self._dialing.get(address)
        if task is None:
            task = self._dialing[address] = loop.create_task(self._dial(address))
            task.add_done_callback(lambda t: self._dialled(address, t))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise PeerUnavailable(
                f"cannot connect to {address!r}: no QUIC handshake within {timeout:g}s"
            ) from None

    def _dialled(self, address: str, task: asyncio.Task[Link]) -> None:
        if self._dialing.get(address) is task:
            del self._dialing[address]
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._failures.pop(address, None)
            link = self._links[address] = task.result()
            link.on_gone = lambda gone: self._lost(address, gone)
            if link.gone:
                self._lost(address, link)
            return
        self._failed(address, error)

    def _lost(self, address: str, link: Link) -> None:
        """A dialled link closed; one its peer refused counts as a failed dial."""
        if self._links.get(address) is link:
            del self._links[address]
        if link.refused and link.failure is not None and not self._shared.closed:
            self._failed(address, link.failure)

    def _failed(self, address: str, error: BaseException) -> None:
        """Back off from ``address`` after a failed dial."""
        count = self._failures.get(address, (0, 0.0, ""))[0] + 1
        wait = min(self.reconnect_max_backoff, self.reconnect_backoff * 2 ** (count - 1))
        wait *= 0.5 + self._rng.random() / 2
        self._failures[address] = (
            count,
            asyncio.get_running_loop().time() + wait,
            str(error).removeprefix(f"cannot connect to {address!r}: "),
        )
        while len(self._failures) > 4096:  # addresses others name cannot grow it unbounded
            del self._failures[next(iter(self._failures))]

    async def _dial(self, address: str) -> Link:
        shared = self._shared
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        quic = QuicConnection(configuration=self._client_config)
        family_v6 = _is_v6(host)
        try:
            _, link = await loop.create_datagram_endpoint(
                lambda: Link(shared, quic, address, dialled=True, max_lanes=self.max_lanes),
                remote_addr=(host, port),
                local_addr=("::", 0) if family_v6 else ("0.0.0.0", 0),
            )
        except OSError as exc:
            raise PeerUnavailable(f"cannot connect to {address!r}: {exc.strerror or exc}") from None
        if shared.closed:
            link.close()
            raise ShuttingDown(f"quic transport {shared.address!r} is closed")
        # aioquic checks that answers come from the address it dialled: the one resolved.
        link.connect(link.remote or (host, port))
        try:
            await link.ready
        except PeerUnavailable:
            if shared.closed:  # close() closed the link under the dial
                raise ShuttingDown(f"quic transport {shared.address!r} is closed") from None
            raise
        return link

    def _keep_alive(self) -> None:
        """PING the dialled links that heard nothing for ``keepalive_after`` (keep-alive).

        Looked for twice per ``keepalive_after``, so a link whose peer answers is never quiet
        for more than 1.5 times it (half the idle time-out).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        after = self.keepalive_after
        for link in list(self._links.values()):
            if not link.gone and now - link.heard >= after:
                link.quic.send_ping(0)
                link.soon()
        self._keepalive = loop.call_later(after / 2, self._keep_alive)

    # -- the Transport interface -------------------------------------------------------

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` on one of the link's lanes and return the answer."""
        shared = self._shared
        size = len(payload)
        if shared.closed or size > shared.max_frame_bytes:
            shared.check_outbound(self.name, address, size)  # raises, saying why
        wait = shared.read_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        start = sent_at = loop.time()
        link = self._links.get(address)
        if (
            link is None
            or link._gone
            or link._queued > shared.max_output_buffer_bytes
            or (link.guard is not None and link.guard.expired)
        ):
            link = await self._ready_link(address, wait, start)
            sent_at = loop.time()
        future: asyncio.Future[bytes] = loop.create_future()
        counters = shared.counters
        counters.requests_sent += 1
        counters.bytes_sent += size
        try:
            request_id = link.request(payload, future)
        except PeerUnavailable:  # the link went meanwhile
            counters.errors += 1
            raise
        slot = self._deadlines.add(loop, future, max(wait - (sent_at - start), 0.0))
        try:
            return await future
        except TimeoutError:
            counters.errors += 1
            if link.heard < sent_at:
                # Not even an acknowledgement since: the peer is gone (killed, or restarted
                # and deaf to this link). The next request dials again.
                link.close("no packet from the peer while a request waited")
            else:
                link.abandon(request_id)
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s") from None
        except (PeerUnavailable, ShuttingDown):
            counters.errors += 1
            raise
        finally:
            self._deadlines.discard(slot, future)
            link.pending.pop(request_id, None)

    async def _ready_link(self, address: str, wait: float, start: float) -> Link:
        """The link a request to ``address`` goes over, once it can take one.

        Dials when there is none (or it went, or its guard expired); waits while more than
        ``max_output_buffer_bytes`` wait for the peer (back-pressure).

        :raises PeerUnavailable: no link (counted).
        :raises PeerTimeout: the peer took nothing of what waits for it within
            ``network.write_timeout`` (counted).
        """
        shared = self._shared
        loop = asyncio.get_running_loop()
        try:
            link = self._usable(address) or await self._link(
                address, min(wait, shared.dial_timeout)
            )
            while link.full:  # back-pressure: the peer has not taken what it was sent
                if loop.time() - start > shared.write_timeout:
                    raise PeerTimeout(
                        f"{address!r} took nothing of what waits for it within "
                        f"{shared.write_timeout:g}s (network.write_timeout)"
                    )
                await asyncio.sleep(0.01)
                if shared.closed:
                    raise ShuttingDown(f"quic transport {shared.address!r} is closed")
                if link.gone:
                    raise link.failure or PeerUnavailable(f"connection to {address!r} lost")
        except (PeerUnavailable, PeerTimeout):
            shared.counters.errors += 1
            raise
        return link

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way, in order after the earlier ones to ``address``.

        It never waits for the peer to read: the frame is queued at once (within
        ``max_output_buffer_bytes``), or lost with the link.

        :raises PeerUnavailable: no link can be opened.
        """
        self._shared.check_outbound(self.name, address, len(payload))
        shared = self._shared
        try:
            link = self._usable(address) or await self._link(address, shared.dial_timeout)
        except PeerUnavailable:
            shared.counters.errors += 1
            raise
        shared.counters.messages_sent += 1
        shared.counters.bytes_sent += len(payload)
        link.one_way(payload)

    async def close(self) -> None:
        """Stop listening, close every link and fail waiting requests; idempotent.

        Frames already queued are acknowledged first, for a second at most.
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._close()
        finally:
            self._closing.set_result(None)

    async def _close(self) -> None:
        shared = self._shared
        shared.closed = True
        self._deadlines.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        error = ShuttingDown(f"quic transport {shared.address!r} closed during the request")
        links = list(shared.links)
        for link in links:
            for future in link.pending.values():
                if not future.done():
                    future.set_exception(error)
            link.pending.clear()
        # What was queued (one-way frames before close) is acknowledged first, briefly.
        deadline = asyncio.get_running_loop().time() + _CLOSE_GRACE
        while any(not li.gone and li.unsent() for li in links):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.005)
        for link in list(shared.links):  # dials in progress too: they raise ShuttingDown
            link.close()
        for task in list(self._retiring):
            task.cancel()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._listener.stopped), _CLOSE_GRACE)
        for answer in list(shared.tasks):
            answer.cancel()
        if shared.tasks:
            await asyncio.gather(*shared.tasks, return_exceptions=True)
        await asyncio.gather(*self._dialing.values(), return_exceptions=True)

    def stats(self) -> TransportStats:
        """Current counters."""
        return self.counters.snapshot(
            self.name,
            self._shared.address,
            self._bind,
            connections=len(self._shared.links),
            partial_bytes=self._shared.inbound,
        )


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
