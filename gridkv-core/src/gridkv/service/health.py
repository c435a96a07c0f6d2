"""Liveness and readiness over HTTP: ``GET /livez`` and ``GET /readyz`` of ``gridkv node``.

``/livez`` answers 200 while the node runs and has a healthy view of the cluster
(:meth:`~gridkv.AsyncGridKV.health_check` passes), ``/readyz`` 200 once the node is ready
(what :meth:`~gridkv.AsyncGridKV.wait_ready` waits for); otherwise 503, with the exception's
message as a one-line text body. ``HEAD`` answers the same without the body; other paths get
404, other methods on the two paths 405, anything that is not an HTTP/1.x request 400.

The server is for probes (Kubernetes, load balancers), not for the open internet, but it
holds no more than it must: a request's head may take :data:`MAX_HEAD_BYTES` and
:data:`REQUEST_TIMEOUT` seconds, at most :data:`MAX_CONNECTIONS` connections are served at
once (more are closed at once), every answer closes its connection, and no error in one
connection reaches another or the node.
"""

from __future__ import annotations

import asyncio
import logging

from gridkv.api.aio import AsyncGridKV
from gridkv.base.errors import ConfigError, GridKVError
from gridkv.base.log import LOGGER_NAME

__all__ = [
    "HealthServer",
    "MAX_HEAD_BYTES",
    "REQUEST_TIMEOUT",
    "MAX_CONNECTIONS",
    "LINGER",
    "LINGER_BYTES",
    "READY_WAIT",
]

log = logging.getLogger(LOGGER_NAME)

#: Bytes of a request's line and headers at most; a longer head gets 431 and is closed.
MAX_HEAD_BYTES = 8 * 1024
#: Seconds a client has to send its request's head, and then to take the answer; a slower
#: one gets 408 (when it can take it) and is closed.
REQUEST_TIMEOUT = 5.0
#: Connections served at once at most; one more is closed without an answer.
MAX_CONNECTIONS = 64
#: After answering, the server stops sending and reads what the client still sends, this many
#: seconds and ``LINGER_BYTES`` at most, before it closes: closing with unread input would
#: reset the connection, and the client could lose the answer (a "lingering close").
LINGER = 1.0
#: Bytes read and dropped in a lingering close at most.
LINGER_BYTES = 64 * 1024
#: Seconds ``/readyz`` gives a node that is not ready yet to become so, through
#: ``wait_ready``, whose error then names what is missing.
READY_WAIT = 0.1

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_PATHS = ("/livez", "/readyz")
_METHODS = ("GET", "HEAD")


class _BadRequest(Exception):
    """The request cannot be answered; ``status`` says why."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class HealthServer:
    """An HTTP/1.1 server of ``/livez`` and ``/readyz`` for one node.

    :param kv: the node whose health is reported.
    :param listen: ``host:port`` (``[v6]:port``) to listen on, as ``health.listen`` gives
        it: port 0 picks a free port and :attr:`address` tells which; an empty host listens
        on every interface; an empty ``listen`` serves nothing (the probes are off).
    """

    def __init__(self, kv: AsyncGridKV, listen: str) -> None:
        self._kv = kv
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._address = ""

    @property
    def address(self) -> str:
        """The address listened on, ``host:port`` with the port the kernel gave for port 0.

        Empty before :meth:`start` and after :meth:`close`.
        """
        return self._address

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._handlers)

    async def start(self) -> None:
        """Listen; probes are answered from now on until :meth:`close`.

        :raises ConfigError: ``health.listen`` cannot be listened on (in use, no such host).
        """
        if self._server is not None or not self._listen:
            return
        host, _, port = self._listen.rpartition(":")
        try:
            self._server = await asyncio.start_server(
                self._serve, host.strip("[]") or None, int(port), limit=MAX_HEAD_BYTES
            )
        except OSError as exc:
            raise ConfigError(
                f"config key 'health.listen': cannot listen on {self._listen!r}: "
                f"{exc.strerror or exc}"
            ) from None
        bound = self._server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self._address = f"{shown}:{bound[1]}"
        log.info(
            "serving liveness and readiness (/livez, /readyz)",
            extra={"node_id": self._kv.node_id, "address": self._address},
        )

    async def close(self) -> None:
        """Stop listening and end the connections still open; idempotent."""
        server, self._server = self._server, None
        self._address = ""
        if server is None:
            return
        server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one connection ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request and close; nothing raised here escapes the connection."""
        task = asyncio.current_task()
        if len(self._handlers) >= MAX_CONNECTIONS or task is None or self._server is None:
            writer.transport.abort()
            return
        self._handlers.add(task)
        closed = False
        try:
            status, body, head_only = await self._answer(reader)
            await self._reply(writer, status, body, head_only)
            await _linger(reader, writer)
            writer.close()
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.wait_closed()
            closed = True
        except OSError:  # connection errors and time-outs alike
            pass  # the client went away or took nothing: there is nobody to tell
        except Exception:  # a bug: logged, and the connection dropped, the server lives on
            log.exception("health probe failed", extra={"node_id": self._kv.node_id})
        finally:
            self._handlers.discard(task)
            if not closed:
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bool]:
        """The status and text for the request ``reader`` brings, and whether it is a HEAD."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                method, path = await _read_head(reader)
        except _BadRequest as exc:
            return exc.status, str(exc), False
        except TimeoutError:
            return 408, "the request took too long", False
        if path not in _PATHS:
            return 404, f"no such path: {path[:100]}; try /livez or /readyz", method == "HEAD"
        if method not in _METHODS:
            return 405, f"method {method} is not allowed; use GET or HEAD", False
        problem = await (self._liveness() if path == "/livez" else self._readiness())
        if problem is None:
            return 200, "ok", method == "HEAD"
        return 503, problem, method == "HEAD"

    async def _liveness(self) -> str | None:
        """Why the node is not live (``health_check``'s error), or ``None``."""
        try:
            await self._kv.health_check()
        except GridKVError as exc:
            return str(exc)
        return None

    async def _readiness(self) -> str | None:
        """Why the node is not ready (``wait_ready``'s error), or ``None``."""
        if self._kv.node.ready:
            return None
        try:
            await self._kv.wait_ready(timeout=READY_WAIT)
        except GridKVError as exc:
            return str(exc)
        return None

    async def _reply(
        self, writer: asyncio.StreamWriter, status: int, text: str, head_only: bool
    ) -> None:
        body = (" ".join(text.split()) + "\n").encode("utf-8", "replace")
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            + ("Allow: GET, HEAD\r\n" if status == 405 else "")
            + "Connection: close\r\n\r\n"
        ).encode("ascii")
        writer.write(head if head_only else head + body)
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """End the sending side, then drop what the client still sends, within bounds."""
    if not writer.can_write_eof() or writer.transport.is_closing():
        return
    writer.write_eof()
    dropped = 0
    try:
        async with asyncio.timeout(LINGER):
            while dropped < LINGER_BYTES:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                dropped += len(chunk)
    except TimeoutError:
        pass


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of the request whose head ``reader`` brings next.

    Reads the request line and the header lines up to the empty line, ``MAX_HEAD_BYTES`` of
    them at most; the headers are checked for their shape and otherwise ignored (every
    answer closes the connection, so no body is ever read).

    :raises _BadRequest: malformed (400), or too long (431).
    """
    taken = 0
    lines: list[bytes] = []
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, f"the request's head is over {MAX_HEAD_BYTES} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if not lines and not exc.partial:
                raise ConnectionResetError("closed before a request") from None
            raise _BadRequest(400, "the request ends before its head does") from None
        taken += len(line)
        if taken > MAX_HEAD_BYTES:
            raise _BadRequest(431, f"the request's head is over {MAX_HEAD_BYTES} bytes")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                break
            continue  # RFC 9112 2.2: empty lines before the request line are ignored
        lines.append(line)
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest(400, "the request line is not METHOD PATH HTTP/1.1") from None
    if not method.isalpha() or not version.startswith("HTTP/1.") or not target:
        raise _BadRequest(400, "the request line is not METHOD PATH HTTP/1.1")
    for header in lines[1:]:
        name, colon, _ = header.partition(b":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(400, "a header line is not Name: value")
    return method, target.partition("?")[0]
