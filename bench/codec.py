"""The wire codec against msgpack itself: decoding and encoding the messages of the hot paths.

For each message, the time of ``msgpack.unpackb`` of its bytes (the floor: what parsing
alone costs) against ``gridkv.wire.codec.decode`` (parsing, then every field checked and the
message built), and ``encode``; the ratio decode / unpackb is the codec's own cost (issue 12:
at most 3x).

    python bench/codec.py [--number N]
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

import msgpack
from _common import write
from gridkv.storage.base import Entry
from gridkv.wire import codec
from gridkv.wire.messages import GetReply, GetRequest, Message, Ping, ReplicateBatch

VERSION = 123_456_789 << 16
MESSAGES: dict[str, Message] = {
    "GetRequest": GetRequest(17, "user:00000000001"),
    "GetReply": GetReply((17, Entry("user:00000000001", b"v" * 100, VERSION, "node-a", 0))),
    "Ping": Ping(1, "client"),
    "ReplicateBatch of 10": ReplicateBatch(
        "node-a", [(i, Entry(f"k{i}", b"v" * 100, VERSION, "node-a", 0)) for i in range(10)]
    ),
}


def per_call_us(fn: Any, number: int) -> float:
    """Microseconds per call of ``fn``, the best of three runs."""
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> None:
    """Print the figures and write ``bench/results/codec.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    print(f"{'message':<22}{'unpackb':>10}{'decode':>10}{'ratio':>8}{'encode':>10}")
    for name, message in MESSAGES.items():
        data = codec.encode(message)
        assert codec.decode(data) == message
        unpack = per_call_us(lambda d=data: msgpack.unpackb(d, raw=False), args.number)
        decode = per_call_us(lambda d=data: codec.decode(d), args.number)
        encode = per_call_us(lambda m=message: codec.encode(m), args.number)
        figures[name] = {
            "unpackb_us": unpack,
            "decode_us": decode,
            "encode_us": encode,
            "ratio": decode / unpack,
        }
        print(f"{name:<22}{unpack:>8.2f}us{decode:>8.2f}us{decode / unpack:>7.1f}x{encode:>8.2f}us")
    worst = max(f["ratio"] for f in figures.values())
    print(f"  {'met ' if worst <= 3 else 'MISSED'}  decode at most 3x unpackb (worst {worst:.1f}x)")
    print(f"\nwritten to {write('codec', {'figures': figures, 'worst_ratio': worst})}")


if __name__ == "__main__":
    main()
