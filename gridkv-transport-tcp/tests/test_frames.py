"""The sans-I/O frame reader: examples, and fuzzing with valid, split and garbage streams."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv.errors import ProtocolError
from gridkv.testing.fuzz import fuzz_examples
from gridkv_transport_tcp.frames import (
    HEAD,
    HELLO,
    ONE_WAY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
    head,
)
from hypothesis import given, settings
from hypothesis import strategies as st

MAX_FRAME = 256


def encode(frames: list[Frame]) -> bytes:
    return b"".join(head(kind, rid, len(body)) + body for kind, rid, body in frames)


def chunks(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at up to 12 points picked by ``seed`` (empty pieces included)."""
    rng = random.Random(seed)
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randrange(13)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def test_frames_in_one_piece_come_out_in_order() -> None:
    frames: list[Frame] = [(REQUEST, 1, b"a"), (RESPONSE, 1, b""), (ONE_WAY, 0, b"xyz")]
    reader = FrameReader(MAX_FRAME)
    assert reader.feed(encode(frames), 0.0) == frames
    assert reader.buffered == 0
    assert reader.started is None


def test_an_oversized_length_is_refused_before_its_body_arrives() -> None:
    reader = FrameReader(MAX_FRAME)
    with pytest.raises(ProtocolError, match="network.max_frame_bytes"):
        reader.feed(head(REQUEST, 1, MAX_FRAME + 1)[:4], 0.0)
    assert FrameReader(MAX_FRAME).feed(head(REQUEST, 1, MAX_FRAME)[:4], 0.0) == []


def test_a_length_too_short_for_the_header_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(MAX_FRAME).feed(b"\x00\x00\x00\x08", 0.0)


def test_an_unknown_kind_is_refused_as_soon_as_it_arrives() -> None:
    reader = FrameReader(MAX_FRAME)
    assert reader.feed(head(HELLO, 0, 100)[:4], 0.0) == []
    with pytest.raises(ProtocolError, match="unknown kind 4"):
        reader.feed(b"\x04", 0.0)


def test_started_is_the_time_of_the_unfinished_frames_first_byte() -> None:
    whole = encode([(REQUEST, 7, b"x" * 100), (ONE_WAY, 0, b"y" * 100)])
    first = HEAD.size + 100
    reader = FrameReader(MAX_FRAME)
    reader.feed(whole[:10], 1.0)
    assert (reader.buffered, reader.started) == (10, 1.0)
    reader.feed(whole[10:50], 2.0)  # more of the same frame: its clock does not restart
    assert (reader.buffered, reader.started) == (50, 1.0)
    assert reader.feed(whole[50 : first + 5], 3.0) == [(REQUEST, 7, b"x" * 100)]
    assert (reader.buffered, reader.started) == (5, 3.0)  # the next frame began at 3.0
    reader.postpone(4.0)
    assert reader.started == 4.0
    assert reader.feed(whole[first + 5 :], 5.0) == [(ONE_WAY, 0, b"y" * 100)]
    assert (reader.buffered, reader.started) == (0, None)


def test_clear_drops_the_unfinished_frame() -> None:
    reader = FrameReader(MAX_FRAME)
    reader.feed(head(REQUEST, 1, 10) + b"abc", 1.0)
    reader.clear()
    assert (reader.buffered, reader.started) == (0, None)


# Strategies are built once, here, and kept to few draws (kind and id come from one integer):
# hypothesis's cost per draw, not the reader, sets the time of the 100,000-example run. Bodies
# are short, or close to the limit; long ones repeat a short pattern.
body_strategy = st.binary(max_size=24) | st.tuples(
    st.binary(min_size=1, max_size=4), st.integers(MAX_FRAME - 4, MAX_FRAME)
).map(lambda pattern_size: (pattern_size[0] * MAX_FRAME)[: pattern_size[1]])
frame_strategy = st.tuples(st.integers(min_value=0, max_value=2**66 - 1), body_strategy).map(
    lambda kind_id_body: (kind_id_body[0] & 3, kind_id_body[0] >> 2, kind_id_body[1])
)
seeds = st.integers(min_value=0, max_value=2**32)
# Frames of any kind (half of them unknown), to go with the garbage.
any_kind_frame_strategy = st.tuples(
    st.integers(min_value=0, max_value=2**67 - 1), body_strategy
).map(lambda kind_id_body: (kind_id_body[0] & 7, kind_id_body[0] >> 3, kind_id_body[1]))


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300))
@given(st.lists(frame_strategy, max_size=8), seeds)
def test_valid_frames_split_anywhere_come_out_identical(frames: list[Frame], seed: int) -> None:
    pieces = chunks(encode(frames), seed)
    bounds = [0]
    for _, _, body in frames:
        bounds.append(bounds[-1] + HEAD.size + len(body))
    reader = FrameReader(MAX_FRAME)
    out: list[Frame] = []
    offset = 0
    arrivals: list[tuple[int, float]] = []  # (first offset of a piece, its time)
    for now, piece in enumerate(pieces):
        arrivals.append((offset, float(now)))
        out += reader.feed(piece, float(now))
        offset += len(piece)
        begun = max(b for b in bounds if b <= offset)
        assert reader.buffered == offset - begun
        if begun == offset:
            assert reader.started is None
        else:  # the time of the piece that brought the unfinished frame's first byte
            assert reader.started == max(t for start, t in arrivals if start <= begun)
    assert out == frames


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300))
@given(st.lists(any_kind_frame_strategy, max_size=8), st.binary(max_size=40), seeds)
def test_any_stream_gives_back_exactly_what_came_in_or_a_protocol_error(
    frames: list[Frame], garbage: bytes, seed: int
) -> None:
    data = encode(frames)
    at = random.Random(seed).randint(0, len(data))  # garbage anywhere, even inside a frame
    reader = FrameReader(MAX_FRAME)
    out: list[Frame] = []
    fed = b""
    try:
        for now, piece in enumerate(chunks(data[:at] + garbage + data[at:], seed)):
            out += reader.feed(piece, float(now))
            fed += piece
            # One unfinished frame at most, never more than a frame's worth.
            assert reader.buffered < HEAD.size + MAX_FRAME
            assert (reader.started is None) == (reader.buffered == 0)
    except ProtocolError:
        assert fed.startswith(encode(out))  # what came out before the error is what went in
        return
    assert all(len(body) <= MAX_FRAME and kind <= HELLO for kind, _, body in out)
    assert encode(out) == fed[: len(fed) - reader.buffered]
