"""Chunk frames (``wreg.core.batch``): round trip, and every malformed body refused
before anything is decoded, without allocating what a frame declares."""

from __future__ import annotations

import struct

import pytest

from wreg.core.batch import FRAME_HEADER_SIZE, encode_frames, frame_header, frames
from wreg.core.digest import digest_bytes
from wreg.core.errors import InvalidInput

A, B = digest_bytes(b"a"), digest_bytes(b"b")


def parse(body: bytes, max_count: int = 10, max_length: int = 1 << 20) -> list[tuple[str, bytes]]:
    return [(d, bytes(v)) for d, v in frames(body, max_count=max_count, max_length=max_length)]


def test_round_trip_keeps_order_and_duplicates() -> None:
    chunks = [(A, b"first"), (B, b""), (A, b"third")]
    body = encode_frames(chunks)
    assert len(body) == 3 * FRAME_HEADER_SIZE + 10
    assert parse(body) == chunks
    assert parse(b"") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\x00" * (FRAME_HEADER_SIZE - 1), "BODY_INVALID"),
        (frame_header(A, 10) + b"short", "BODY_INVALID"),
        (struct.pack("<32sI", bytes(32), 0xFFFF_FFFF), "CHUNK_TOO_LARGE"),
        (encode_frames([(A, b"x")] * 11), "BODY_TOO_LARGE"),
    ],
    ids=["truncated-header", "past-the-body", "past-the-cap", "too-many"],
)
def test_malformed_bodies_are_refused(body: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(body)
    assert caught.value.code.name == code


def test_a_frame_header_is_fixed_size() -> None:
    assert len(frame_header(A, 0)) == FRAME_HEADER_SIZE == 36
    with pytest.raises(ValueError, match="u32"):
        frame_header(A, 1 << 32)
