"""The framing of batched chunk transfers: many encoded chunks in one HTTP body.

``POST /v1/repositories/{name}/chunks/fetch`` answers, and ``POST
/v1/repositories/{name}/chunks/upload`` takes, a body that is nothing but frames, one
after another, with no preamble and no trailer::

    frame  = digest (32 bytes: the raw blake3 of the chunk's raw bytes)
           | length (u32, little-endian: the encoded chunk's byte count)
           | encoded chunk (``length`` bytes: the stored encoding, "Wire formats")

A 36-byte fixed header then the bytes, so a reader needs no lookahead and a writer no
buffering; the digest travels in each frame so every chunk is checked against the name
it arrived under, never trusted by position. Each chunk stays what it is alone — the
unit of auth, GC and verification: the reader decodes and verifies every frame on its
own, exactly as for a single-chunk ``GET`` or ``PUT``.

Parsing (``frames``) is linear in the body and allocates nothing per frame but a
``memoryview`` slice: a truncated header, a length past the end of the body or past
``max_length`` is ``BODY_INVALID`` (or ``CHUNK_TOO_LARGE``) before anything is decoded,
and more than ``max_count`` frames is ``BODY_TOO_LARGE``. This module does no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Final

from wreg.core.digest import PREFIX, hex_of
from wreg.core.errors import ErrorCode

FRAME_HEADER: Final = struct.Struct("<32sI")
"""digest (32 raw bytes) | encoded length (u32 LE)."""
FRAME_HEADER_SIZE: Final = FRAME_HEADER.size  # 36
MAX_FRAME_LENGTH: Final = 0xFFFF_FFFF


def frame_header(digest: str, length: int) -> bytes:
    """The 36-byte header of a frame carrying ``length`` encoded bytes of ``digest``."""
    if not 0 <= length <= MAX_FRAME_LENGTH:
        raise ValueError(f"frame length {length} does not fit in u32")
    return FRAME_HEADER.pack(bytes.fromhex(hex_of(digest)), length)


def encode_frames(chunks: Sequence[tuple[str, bytes | bytearray | memoryview]]) -> bytes:
    """A whole body of frames, one per ``(digest, encoded)`` in order."""
    parts: list[bytes | bytearray | memoryview] = []
    for digest, encoded in chunks:
        parts.append(frame_header(digest, len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def frames(
    body: bytes | bytearray | memoryview, *, max_count: int, max_length: int
) -> Iterator[tuple[str, memoryview]]:
    """Each ``(digest, encoded)`` of ``body``, in order, the bytes a view into ``body``.

    Raises ``InvalidInput``: ``BODY_INVALID`` for a truncated header or a length past
    the end of ``body``, ``CHUNK_TOO_LARGE`` for a length over ``max_length``,
    ``BODY_TOO_LARGE`` past ``max_count`` frames. Frames before the bad one have been
    yielded already: a caller that must be all-or-nothing lists them first.
    """
    view = memoryview(body).cast("B")
    end = len(view)
    at = 0
    count = 0
    while at < end:
        count += 1
        if count > max_count:
            raise ErrorCode.BODY_TOO_LARGE.error(
                f"at most {max_count} chunks per batch",
                detail={"limit": max_count},
            )
        if end - at < FRAME_HEADER_SIZE:
            raise ErrorCode.BODY_INVALID.error(
                f"truncated frame header at byte {at}: {end - at} of {FRAME_HEADER_SIZE} bytes",
                detail={"offset": at, "frame": count - 1},
            )
        raw_digest, length = FRAME_HEADER.unpack_from(view, at)
        digest = PREFIX + raw_digest.hex()
        at += FRAME_HEADER_SIZE
        if length > max_length:
            raise ErrorCode.CHUNK_TOO_LARGE.error(
                f"frame {count - 1} ({digest}) declares {length} bytes, over the limit of "
                f"{max_length}",
                detail={"digest": digest, "frame": count - 1, "size": length, "limit": max_length},
            )
        if length > end - at:
            raise ErrorCode.BODY_INVALID.error(
                f"frame {count - 1} ({digest}) declares {length} bytes but only {end - at} follow",
                detail={"digest": digest, "frame": count - 1, "offset": at - FRAME_HEADER_SIZE},
            )
        yield digest, view[at : at + length]
        at += length
