"""Decoding never produces or allocates more than the raw length a chunk's header declares.

Each payload is a few KiB that a naive decoder inflates to a gibibyte or more: a zstd frame
that omits its content size, one that declares a huge one (python-zstandard's one-shot
``decompress`` allocates whatever the frame header declares), and one whose declared size
is true. Each runs in a fresh interpreter so its peak RSS can be read on its own.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import pytest

from wreg.core.encoding import HEADER_SIZE, MAGIC, VERSION, Codec, Transform

GiB = 1 << 30
# A bomb inflates to ≥ 1 GiB; a bounded decoder needs a few MiB. The cap sits far from both.
RSS_GROWTH_CAP = 64 << 20
_BLOCK = 1 << 17  # zstd's largest block


def rle_frame(total: int, declared: int | None = None, window_log: int = 17) -> bytes:
    """A zstd frame of ``total`` zero bytes in RLE blocks (4 bytes per 128 KiB).

    ``declared`` goes in the frame header's content size field; ``None`` omits the field.
    """
    frame = bytearray(b"\x28\xb5\x2f\xfd")
    window = (window_log - 10) << 3
    if declared is None:
        frame += bytes([0x00, window])
    else:
        frame += bytes([0xC0, window]) + struct.pack("<Q", declared)
    left = total
    while left > 0:
        n = min(_BLOCK, left)
        left -= n
        frame += struct.pack("<I", n << 3 | 1 << 1 | (left == 0))[:3] + b"\x00"
    return bytes(frame)


def zstd_chunk(raw_len: int, frame: bytes) -> bytes:
    header = struct.pack("<4sBBBBQ", MAGIC, VERSION, Codec.ZSTD, Transform.NONE, 0, raw_len)
    return header + frame


def plane_chunk(count: int, frame: bytes) -> bytes:
    """A bytegroup2 chunk of ``count`` values: plane 0 is ``frame``, plane 1 raw zeros."""
    header = struct.pack("<4sBBBBQ", MAGIC, VERSION, Codec.ZSTD, Transform.BYTEGROUP2, 0, 2 * count)
    table = struct.pack("<BI", Codec.ZSTD, len(frame)) + struct.pack("<BI", Codec.NONE, count)
    return header + table + frame + bytes(count)


SMALL = 4096
BOMBS = {
    "no-content-size": zstd_chunk(SMALL, rle_frame(GiB)),
    "true-huge-content-size": zstd_chunk(SMALL, rle_frame(GiB, declared=GiB)),
    "false-huge-content-size": zstd_chunk(SMALL, rle_frame(SMALL, declared=1 << 44)),
    "huge-window": zstd_chunk(SMALL, rle_frame(GiB, window_log=27)),
    "bomb-after-good-frame": zstd_chunk(SMALL, rle_frame(SMALL) + rle_frame(GiB)),
    "plane-no-content-size": plane_chunk(SMALL, rle_frame(GiB)),
    "plane-true-huge-content-size": plane_chunk(SMALL, rle_frame(GiB, declared=GiB)),
    "plane-false-huge-content-size": plane_chunk(SMALL, rle_frame(SMALL, declared=1 << 44)),
    "plane-huge-window": plane_chunk(SMALL, rle_frame(GiB, window_log=27)),
    "plane-bomb-after-good-frame": plane_chunk(SMALL, rle_frame(SMALL) + rle_frame(GiB)),
}

_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from wreg.core.encoding import decode_chunk
    from wreg.core.errors import WregError

    blob = sys.stdin.buffer.read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        decode_chunk(blob)
        code = None
    except WregError as exc:
        code = exc.code.name
    except BaseException as exc:
        code = type(exc).__name__
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"code": code, "growth": growth}))
    """
)


def decode_in_subprocess(blob: bytes) -> dict[str, object]:
    done = subprocess.run(  # noqa: S603 - this interpreter, a script fixed above
        [sys.executable, "-c", _PROBE], input=blob, capture_output=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_is_rejected_with_bounded_memory(name: str) -> None:
    blob = BOMBS[name]
    assert len(blob) < 64 * 1024 + HEADER_SIZE + 2 * SMALL
    result = decode_in_subprocess(blob)
    assert result["code"] == "CHUNK_INVALID"
    growth = result["growth"]
    assert isinstance(growth, int)
    assert growth < RSS_GROWTH_CAP, f"peak RSS grew by {growth >> 20} MiB"


@pytest.mark.parametrize("plane", [False, True])
def test_frames_of_the_right_size_still_decode(plane: bool) -> None:
    from wreg.core.encoding import decode_chunk

    for declared in (None, SMALL):
        frame = rle_frame(SMALL, declared=declared)
        blob = plane_chunk(SMALL, frame) if plane else zstd_chunk(SMALL, frame)
        assert bytes(decode_chunk(blob)) == bytes(2 * SMALL if plane else SMALL)


def _zstd(data: bytes, **params: int) -> bytes:
    import zstandard

    if params:
        cp = zstandard.ZstdCompressionParameters(**params)
        return zstandard.ZstdCompressor(compression_params=cp).compress(data)
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


_DATA = bytes(range(256)) * 64  # 16 KiB, compressible


@pytest.mark.parametrize(
    ("frame", "data"),
    [
        (_zstd(_DATA), _DATA),  # with a content checksum
        (_zstd(_DATA, window_log=10), _DATA),  # 1 KiB window: 16 blocks
        (rle_frame(len(_DATA)), bytes(len(_DATA))),  # no content size, RLE blocks
    ],
    ids=["checksum", "small-window", "rle-no-size"],
)
@pytest.mark.parametrize("plane", [False, True])
def test_honest_frames_of_any_shape_decode(frame: bytes, data: bytes, plane: bool) -> None:
    """The block walk that finds the frame's end accepts every frame a zstd encoder writes."""
    from wreg.core.encoding import decode_chunk

    blob = plane_chunk(len(data), frame) if plane else zstd_chunk(len(data), frame)
    # plane_chunk's second plane is zeros: decoded values are (data byte, 0) pairs.
    expected = bytes(b for value in data for b in (value, 0)) if plane else data
    assert bytes(decode_chunk(blob)) == expected


@pytest.mark.parametrize(
    "trailer",
    [b"\x00", b"garbage", _zstd(b""), rle_frame(16)],
    ids=["one-byte", "garbage", "empty-frame", "second-frame"],
)
@pytest.mark.parametrize("plane", [False, True])
def test_bytes_after_the_frame_are_rejected(trailer: bytes, plane: bool) -> None:
    from wreg.core.encoding import decode_chunk
    from wreg.core.errors import InvalidInput

    frame = rle_frame(SMALL, declared=SMALL) + trailer
    blob = plane_chunk(SMALL, frame) if plane else zstd_chunk(SMALL, frame)
    with pytest.raises(InvalidInput, match="invalid chunk encoding"):
        decode_chunk(blob)


@pytest.mark.parametrize("plane", [False, True])
def test_a_frame_of_empty_blocks_is_refused_without_walking_it(plane: bool) -> None:
    """4 MiB of empty raw blocks (3 bytes each) for a 4 KiB chunk: refused at block 6."""
    from wreg.core.encoding import decode_chunk
    from wreg.core.errors import InvalidInput

    empty_block = struct.pack("<I", 0)[:3]
    frame = rle_frame(0)[:6] + empty_block * (4 << 20) + struct.pack("<I", 1)[:3]
    blob = plane_chunk(SMALL, frame) if plane else zstd_chunk(SMALL, frame)
    with pytest.raises(InvalidInput, match="more blocks"):
        decode_chunk(blob)
