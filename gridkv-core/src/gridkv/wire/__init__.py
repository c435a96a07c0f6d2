"""The wire layer: message types, the msgpack codec and stream framing."""

from __future__ import annotations

from gridkv.wire.codec import DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, decode, encode
from gridkv.wire.framing import Frame, FrameReader
from gridkv.wire.messages import (
    MESSAGE_TYPES,
    BatchAck,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    Ping,
    Pong,
    ReplicateBatch,
)

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME_BYTES",
    "encode",
    "decode",
    "Frame",
    "FrameReader",
    "MESSAGE_TYPES",
    "Message",
    "Ping",
    "Pong",
    "ErrorReply",
    "GetRequest",
    "GetReply",
    "ReplicateBatch",
    "BatchAck",
]
