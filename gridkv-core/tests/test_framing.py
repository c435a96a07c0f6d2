"""The stream framing's sans-I/O reader: examples, and fuzzing with valid, split and garbage
streams."""

from __future__ import annotations

import random

import pytest
from gridkv.base.errors import ProtocolError
from gridkv.testing.fuzz import fuzz_examples
from gridkv.wire.framing import (
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


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at up to 12 points ``rng`` picks (empty pieces included)."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randrange(13)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def state(reader: FrameReader) -> tuple[int, float | None]:
    """What the reader holds and since when (read afresh: a call to it may change both)."""
    return reader.buffered, reader.started


def test_frames_in_one_piece_come_out_in_order() -> None:
    frames: list[Frame] = [(REQUEST, 1, b"a"), (RESPONSE, 1, b""), (ONE_WAY, 0, b"xyz")]
    reader = FrameReader(MAX_FRAME)
    assert reader.feed(encode(frames), 0.0) == frames
    assert reader.buffered == 0
    assert reader.started is None


def test_frames_split_at_every_size_come_out_whole_and_in_order() -> None:
    frames: list[Frame] = [(i & 3, i, bytes([i]) * i) for i in range(50)]  # every kind
    stream = encode(frames)
    for size in (1, 3, 7, 64, len(stream)):
        reader = FrameReader(MAX_FRAME)
        out: list[Frame] = []
        for at in range(0, len(stream), size):
            out += reader.feed(stream[at : at + size], float(at))
        assert out == frames
        assert state(reader) == (0, None)


def test_an_oversized_length_is_refused_before_its_body_arrives() -> None:
    reader = FrameReader(MAX_FRAME)
    with pytest.raises(ProtocolError, match="network.max_frame_bytes"):
        reader.feed(head(REQUEST, 1, MAX_FRAME + 1)[:4], 0.0)
    assert FrameReader(MAX_FRAME).feed(head(REQUEST, 1, MAX_FRAME)[:4], 0.0) == []


def test_a_length_too_short_for_the_header_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(MAX_FRAME).feed(b"\x00\x00\x00\x08", 0.0)


def test_a_whole_frame_of_unknown_kind_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown kind 5"):
        FrameReader(MAX_FRAME).feed(head(5, 1, 3) + b"abc", 0.0)


def test_an_unknown_kind_is_refused_as_soon_as_it_arrives() -> None:
    reader = FrameReader(MAX_FRAME)
    assert reader.feed(head(HELLO, 0, 100)[:4], 0.0) == []
    with pytest.raises(ProtocolError, match="unknown kind 5"):
        reader.feed(b"\x05", 0.0)


def test_started_is_the_time_of_the_unfinished_frames_first_byte() -> None:
    whole = encode([(REQUEST, 7, b"x" * 100), (ONE_WAY, 0, b"y" * 100)])
    first = HEAD.size + 100
    reader = FrameReader(MAX_FRAME)
    reader.feed(whole[:10], 1.0)
    assert state(reader) == (10, 1.0)
    reader.feed(whole[10:50], 2.0)  # more of the same frame: its clock does not restart
    assert state(reader) == (50, 1.0)
    assert reader.feed(whole[50 : first + 5], 3.0) == [(REQUEST, 7, b"x" * 100)]
    assert state(reader) == (5, 3.0)  # the next frame began at 3.0
    reader.postpone(4.0)
    assert state(reader) == (5, 4.0)
    assert reader.feed(whole[first + 5 :], 5.0) == [(ONE_WAY, 0, b"y" * 100)]
    assert state(reader) == (0, None)


def test_clear_drops_the_unfinished_frame() -> None:
    reader = FrameReader(MAX_FRAME)
    reader.feed(head(REQUEST, 1, 10) + b"abc", 1.0)
    reader.clear()
    assert state(reader) == (0, None)


# One fuzz test, not two: hypothesis's own cost per example, not the reader, sets the time of
# the 100,000-example run. Strategies are built once, here, and kept to few draws (a frame's
# kind and id come from one integer). Bodies are short, or close to the limit; long ones repeat
# a short pattern.
body_strategy = st.binary(max_size=24) | st.tuples(
    st.binary(min_size=1, max_size=4), st.integers(MAX_FRAME - 4, MAX_FRAME)
).map(lambda pattern_size: (pattern_size[0] * MAX_FRAME)[: pattern_size[1]])
frame_strategy = st.tuples(st.integers(min_value=0, max_value=2**66 - 1), body_strategy).map(
    lambda kind_id_body: (kind_id_body[0] & 3, kind_id_body[0] >> 2, kind_id_body[1])
)
# No garbage (a quarter of the examples), random bytes, a header of any length and kind, or a
# whole frame of any kind.
garbage_strategy = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=40),
    st.tuples(st.integers(min_value=0, max_value=MAX_FRAME + 20), st.integers(0, 255)).map(
        lambda length_kind: length_kind[0].to_bytes(4, "big") + bytes([length_kind[1]])
    ),
    st.tuples(st.integers(0, 255), st.binary(max_size=8)).map(
        lambda kind_body: head(kind_body[0], 0, len(kind_body[1])) + kind_body[1]
    ),
)


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(300))
@given(
    st.lists(frame_strategy, max_size=8),
    garbage_strategy,
    st.integers(min_value=0, max_value=2**32),
)
def test_frames_and_garbage_cut_anywhere_give_back_exactly_what_came_in(
    frames: list[Frame], garbage: bytes, seed: int
) -> None:
    rng = random.Random(seed)
    data = encode(frames)
    at = rng.randint(0, len(data))  # where the garbage goes, even inside a frame
    stream = data[:at] + garbage + data[at:]
    bounds = [0]  # where each valid frame starts
    for _, _, body in frames:
        bounds.append(bounds[-1] + HEAD.size + len(body))
    intact = frames[: len([b for b in bounds[1:] if b <= at])]  # whole before the garbage
    reader = FrameReader(MAX_FRAME)
    out: list[Frame] = []
    fed = b""
    arrivals: list[tuple[int, float]] = []  # (first offset of a piece, its time)
    refused = False
    try:
        for now, piece in enumerate(chunks(stream, rng)):
            arrivals.append((len(fed), float(now)))
            out += reader.feed(piece, float(now))
            fed += piece
            # One unfinished frame at most, never more than a frame's worth, and its clock.
            assert reader.buffered < HEAD.size + MAX_FRAME
            assert (reader.started is None) == (reader.buffered == 0)
            if not garbage:  # then it is the time of the piece with the frame's first byte
                begun = max(b for b in bounds if b <= len(fed))
                assert reader.buffered == len(fed) - begun
                if reader.buffered:
                    assert reader.started == max(t for start, t in arrivals if start <= begun)
    except ProtocolError:
        refused = True
    assert out[: len(intact)] == intact[: len(out)]  # the frames before the garbage, identical
    assert all(len(body) <= MAX_FRAME and kind <= HELLO for kind, _, body in out)
    if refused:
        assert garbage  # valid frames are never refused
        assert fed.startswith(encode(out))  # what came out before the error is what went in
        return
    if not garbage:
        assert out == frames
    assert encode(out) == fed[: len(fed) - reader.buffered]
