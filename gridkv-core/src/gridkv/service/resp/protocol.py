r"""RESP on the wire: requests parsed (hiredis, and inline commands) and replies encoded.

Requests. A client sends each command as an array of bulk strings (``*2\\r\\n$3\\r\\nGET...``),
or, typing by hand, as an inline line (``GET key``). Arrays are parsed by hiredis's C reader
(``hiredis.Reader``): ``bench/resp.py`` measures it against a parser in Python. Inline lines,
and what hiredis would take but Redis refuses (a nested array, an integer where a bulk string
belongs), are handled here. Each limit gives Redis's own error: more arguments than
``resp.max_args`` (``invalid multibulk length``), an inline line over 64 KiB, unbalanced
quotes; a client whose command in progress passes ``resp.max_query_bytes`` is cut, as Redis
cuts one past ``client-query-buffer-limit``.

Replies. :class:`Replies` encodes for RESP2 or RESP3 (after ``HELLO 3``): nulls, maps,
doubles and verbatim strings differ, the rest is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import hiredis

__all__ = [
    "RespError",
    "QueryTooLong",
    "RequestParser",
    "Replies",
    "RESP2",
    "RESP3",
    "OK",
    "PONG",
    "INLINE_MAX",
    "UNAUTHENTICATED_QUERY",
    "encode_error",
]

#: Longest inline command (Redis's PROTO_INLINE_MAX_SIZE).
INLINE_MAX: Final = 64 * 1024

#: Bytes a command of a client that has not authenticated may take (Redis allows such a
#: client 10 arguments of 16 KiB): past it the client is cut before it is parsed further.
UNAUTHENTICATED_QUERY: Final = 256 * 1024

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"


class RespError(Exception):
    """A request the door answers with ``message`` (Redis's words), then closes on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueryTooLong(Exception):
    """A client's command in progress passed ``resp.max_query_bytes``: it is cut, unanswered."""


def encode_error(message: str) -> bytes:
    """``message`` as a RESP error (newlines, which would break the framing, become spaces)."""
    text = message.replace("\r", " ").replace("\n", " ")
    return b"-" + text.encode("utf-8", "replace") + b"\r\n"


_ESCAPES: Final = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("a"): b"\a",
}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_SPACE: Final = frozenset(b" \n\r\t\v\f\0")


def split_inline(line: bytes) -> list[bytes]:
    r"""An inline command's arguments, split as Redis's ``sdssplitargs`` splits them.

    Spaces separate; ``"..."`` takes ``\\n``, ``\\xHH`` and the like; ``'...'`` takes ``\\'``.

    :raises RespError: unbalanced quotes.
    """
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while True:
            if quote == 0:
                if i >= n or line[i] in _SPACE:
                    break
                if line[i] in b"\"'":
                    quote = line[i]
                else:
                    current.append(line[i])
                i += 1
                continue
            if i >= n:
                raise RespError("ERR Protocol error: unbalanced quotes in request")
            c = line[i]
            if (
                quote == ord('"')
                and c == ord("\\")
                and i + 3 < n
                and line[i + 1] == ord("x")
                and line[i + 2] in _HEX
                and line[i + 3] in _HEX
            ):
                current.append(int(line[i + 2 : i + 4], 16))
                i += 4
                continue
            if c == ord("\\") and i + 1 < n and (quote == ord('"') or line[i + 1] == ord("'")):
                nxt = line[i + 1]
                current += _ESCAPES.get(nxt, bytes([nxt])) if quote == ord('"') else b"'"
                i += 2
                continue
            if c == quote:
                # The closing quote must be followed by a space or the end.
                if i + 1 < n and line[i + 1] not in _SPACE:
                    raise RespError("ERR Protocol error: unbalanced quotes in request")
                i += 1
                break
            current.append(c)
            i += 1
        args.append(bytes(current))


def _type_byte(item: object) -> str:
    """The RESP type byte a reply item came as (what Redis names in its error)."""
    if isinstance(item, list):
        return "*"
    if isinstance(item, int):
        return ":"
    if isinstance(item, str):
        return "+"
    if isinstance(item, hiredis.ReplyError):
        return "-"
    return "$"


class RequestParser:
    """One connection's requests, parsed as they arrive.

    :meth:`feed` takes bytes; :meth:`next` returns the next complete command (a list of
    arguments), ``None`` while more bytes are needed.

    :param max_args: arguments a command may have.
    :param max_query: bytes a command in progress may take.
    """

    def __init__(self, max_args: int, max_query: int) -> None:
        self._max_args = max_args
        self._max_query = max_query
        self._reader = hiredis.Reader()
        #: Bytes not given to hiredis yet: held where hiredis holds nothing, until the first
        #: byte says whether an array or an inline command follows.
        self._raw = b""
        #: Whether hiredis is in the middle of a command.
        self._mid = False
        #: Bytes received since the last complete command.
        self._taken = 0
        #: Whether the client has authenticated (an unauthenticated one has tighter limits).
        self.authenticated = True

    def feed(self, data: bytes) -> None:
        """Take bytes from the client.

        :raises QueryTooLong: the command in progress passed ``max_query`` bytes.
        """
        self._taken += len(data)
        if self._taken > (self._max_query if self.authenticated else UNAUTHENTICATED_QUERY):
            raise QueryTooLong
        if self._mid or self._reader.has_data():
            self._reader.feed(data)
        else:
            self._raw += data

    def next(self) -> list[bytes] | None:
        """The next complete command, or ``None`` when more bytes are needed.

        :raises RespError: the request is malformed (the connection is to be closed after the
            error is sent).
        """
        reader = self._reader
        while True:
            if not self._mid and not reader.has_data():
                raw = self._raw
                if not raw:
                    return None
                if raw[0] != 0x2A:  # not "*": an inline command
                    command = self._inline()
                    if command is None:
                        return None
                    if not command:
                        continue  # an empty line: nothing to run
                    return command
                reader.feed(raw)
                self._raw = b""
            try:
                request = reader.gets()
            except hiredis.ProtocolError as exc:
                raise RespError(_redis_protocol_error(str(exc))) from None
            if request is False:
                self._mid = True
                return None
            self._mid = False
            self._taken = 0
            if type(request) is list:
                if len(request) > self._max_args:
                    raise RespError("ERR Protocol error: invalid multibulk length")
                for item in request:
                    if type(item) is not bytes:
                        raise RespError(
                            f"ERR Protocol error: expected '$', got '{_type_byte(item)}'"
                        )
                if not self.authenticated:
                    if len(request) > 10:
                        raise RespError("ERR Protocol error: unauthenticated multibulk length")
                    if any(len(item) > 16384 for item in request):
                        raise RespError("ERR Protocol error: unauthenticated bulk length")
                if request:
                    return request
                continue  # "*0": Redis runs nothing and answers nothing
            if request is None:
                continue  # "*-1": nothing either
            # Something other than an array after an array ("+x", ":1", "$1"): Redis would
            # read it as an inline command; GridKV takes inline commands only where nothing
            # else is buffered (docs/resp.md).
            raise RespError(f"ERR Protocol error: expected '*', got '{_type_byte(request)}'")

    def _inline(self) -> list[bytes] | None:
        """The inline command at the start of ``_raw``, ``None`` until its line is complete."""
        raw = self._raw
        end = raw.find(b"\n")
        if end < 0:
            if len(raw) > INLINE_MAX:
                raise RespError("ERR Protocol error: too big inline request")
            return None
        line = raw[:end]
        self._raw = raw[end + 1 :]
        self._taken = len(self._raw)
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > INLINE_MAX:
            raise RespError("ERR Protocol error: too big inline request")
        args = split_inline(line)
        if len(args) > self._max_args:
            raise RespError("ERR Protocol error: invalid multibulk length")
        return args


def _redis_protocol_error(message: str) -> str:
    """Hiredis's words for a malformed request, as Redis says them."""
    if "bulk" in message.lower() and "multi" not in message.lower():
        return "ERR Protocol error: invalid bulk length"
    if "multi" in message.lower() or "length" in message.lower():
        return "ERR Protocol error: invalid multibulk length"
    return f"ERR Protocol error: {message}"


#: Protocol versions.
RESP2: Final = 2
RESP3: Final = 3


class Replies:
    """Encodes replies for RESP2 or RESP3 (``version``)."""

    __slots__ = ("null", "null_array", "version")

    def __init__(self, version: int = RESP2) -> None:
        self.version = version
        #: A missing value: ``$-1`` (RESP2) or ``_`` (RESP3).
        self.null = b"_\r\n" if version == RESP3 else b"$-1\r\n"
        #: A missing array: ``*-1`` (RESP2) or ``_`` (RESP3).
        self.null_array = b"_\r\n" if version == RESP3 else b"*-1\r\n"

    @staticmethod
    def bulk(value: bytes) -> bytes:
        """A bulk string."""
        return b"$%d\r\n%b\r\n" % (len(value), value)

    def maybe(self, value: bytes | None) -> bytes:
        """A bulk string, or the null for ``None``."""
        return self.null if value is None else b"$%d\r\n%b\r\n" % (len(value), value)

    @staticmethod
    def integer(value: int) -> bytes:
        """An integer."""
        return b":%d\r\n" % value

    @staticmethod
    def simple(text: str) -> bytes:
        """A simple string."""
        return b"+" + text.encode() + b"\r\n"

    @staticmethod
    def array(items: Sequence[bytes]) -> bytes:
        """An array of encoded items."""
        return b"*%d\r\n%b" % (len(items), b"".join(items))

    def bulks(self, values: Iterable[bytes | None]) -> bytes:
        """An array of bulk strings (nulls for ``None``)."""
        parts = [self.maybe(v) for v in values]
        return b"*%d\r\n%b" % (len(parts), b"".join(parts))

    def map(self, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
        """A map of encoded keys to encoded values (a flat array in RESP2)."""
        body = b"".join(k + v for k, v in pairs)
        if self.version == RESP3:
            return b"%%%d\r\n%b" % (len(pairs), body)
        return b"*%d\r\n%b" % (2 * len(pairs), body)

    def set(self, items: Sequence[bytes]) -> bytes:
        """A set of encoded items (an array in RESP2)."""
        head = b"~" if self.version == RESP3 else b"*"
        return head + b"%d\r\n%b" % (len(items), b"".join(items))

    def double(self, value: bytes) -> bytes:
        """A double (given as its text; a bulk string in RESP2)."""
        if self.version == RESP3:
            return b",%b\r\n" % value
        return self.bulk(value)

    def verbatim(self, text: str) -> bytes:
        """Verbatim text (a bulk string in RESP2), as INFO and CLIENT INFO answer."""
        raw = text.encode()
        if self.version == RESP3:
            return b"=%d\r\ntxt:%b\r\n" % (len(raw) + 4, raw)
        return self.bulk(raw)
