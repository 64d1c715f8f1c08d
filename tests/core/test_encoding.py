import os
import struct
from collections.abc import Callable

import numpy as np
import pytest

from wreg.core.digest import digest_bytes
from wreg.core.encoding import (
    HEADER_SIZE,
    Codec,
    Transform,
    decode_chunk,
    decode_chunk_into,
    encode_chunk,
    parse_header,
)
from wreg.core.errors import ErrorCode, IntegrityError, InvalidInput


def _floats(n: int, dtype: str) -> bytes:
    rng = np.random.default_rng(7)
    values = rng.normal(0, 0.05, n).astype(np.float32)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype == "F16":
        return values.astype(np.float16).tobytes()
    return values.tobytes()


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "I64", None])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 63, 64, 4097, 100_003])
def test_round_trip_any_length(dtype: str | None, n: int) -> None:
    raw = (_floats(n // 2 + 1, "F32") + os.urandom(n))[:n]
    blob = encode_chunk(raw, dtype)
    assert bytes(decode_chunk(blob, expected_digest=digest_bytes(raw))) == raw
    out = memoryview(bytearray(n + 10))
    assert decode_chunk_into(blob, out) == n
    assert bytes(out[:n]) == raw


@pytest.mark.parametrize(
    ("dtype", "transform", "bound"),
    [("F32", Transform.BYTEGROUP4_EXP, 0.86), ("BF16", Transform.BYTEGROUP2_EXP, 0.72)],
)
def test_float_weights_use_planes_and_compress(
    dtype: str, transform: Transform, bound: float
) -> None:
    raw = _floats(1 << 18, dtype)
    blob = encode_chunk(raw, dtype)
    codec, got_transform, raw_len = parse_header(blob)
    assert (codec, got_transform, raw_len) == (Codec.ZSTD, transform, len(raw))
    assert len(blob) < bound * len(raw)


def test_incompressible_bytes_are_stored_raw() -> None:
    raw = os.urandom(100_000)
    blob = encode_chunk(raw)
    assert parse_header(blob)[0] is Codec.NONE
    assert len(blob) == HEADER_SIZE + len(raw)


def test_digest_mismatch_is_an_integrity_error() -> None:
    blob = encode_chunk(b"a" * 1000)
    with pytest.raises(IntegrityError) as info:
        decode_chunk(blob, expected_digest=digest_bytes(b"b" * 1000))
    assert info.value.code is ErrorCode.DIGEST_MISMATCH


def _corrupt_header(blob: bytes, **fields: int) -> bytes:
    magic, version, codec, transform, reserved, raw_len = struct.unpack_from("<4sBBBBQ", blob)
    values = {"version": version, "codec": codec, "transform": transform}
    values |= {"reserved": reserved, "raw_len": raw_len} | fields
    header = struct.pack(
        "<4sBBBBQ",
        magic,
        values["version"],
        values["codec"],
        values["transform"],
        values["reserved"],
        values["raw_len"],
    )
    return header + blob[HEADER_SIZE:]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:10],
        lambda b: b"XXXX" + b[4:],
        lambda b: _corrupt_header(b, version=9),
        lambda b: _corrupt_header(b, codec=7),
        lambda b: _corrupt_header(b, transform=42),
        lambda b: _corrupt_header(b, reserved=1),
        lambda b: _corrupt_header(b, raw_len=1 << 40),
        lambda b: _corrupt_header(b, raw_len=12345),
        lambda b: b[:-5],
        lambda b: b + b"extra",
    ],
)
def test_bad_encodings_are_rejected(mangle: Callable[[bytes], bytes]) -> None:
    raw = _floats(10_000, "F32")
    for blob in (encode_chunk(raw, "F32"), encode_chunk(raw), encode_chunk(os.urandom(999))):
        with pytest.raises(InvalidInput) as info:
            decode_chunk(mangle(blob))
        assert info.value.code is ErrorCode.CHUNK_INVALID


def _plane_chunk(raw: bytes, transform: Transform, stored_zstd: list[bool]) -> bytes:
    """A plane-encoded chunk built by hand (a reference encoder), each plane stored as told."""
    import zstandard

    width = 2 if transform in (Transform.BYTEGROUP2, Transform.BYTEGROUP2_EXP) else 4
    count = len(raw) // width
    cols = np.frombuffer(raw[: count * width], np.uint8).reshape(count, width)
    planes: list[np.ndarray] = [np.ascontiguousarray(cols[:, i]) for i in range(width)]
    if transform in (Transform.BYTEGROUP2_EXP, Transform.BYTEGROUP4_EXP):
        high, low = planes[-1], planes[-2]
        planes[-1] = (high << 1) | (low >> 7)
        planes[-2] = (high & 0x80) | (low & 0x7F)
    header = struct.pack("<4sBBBBQ", b"WRGC", 1, Codec.ZSTD, transform, 0, len(raw))
    table, parts = b"", b""
    for plane, packed in zip(planes, stored_zstd, strict=True):
        part = zstandard.ZstdCompressor(level=1).compress(plane.tobytes()) if packed else plane
        table += struct.pack("<BI", Codec.ZSTD if packed else Codec.NONE, len(part))
        parts += bytes(part)
    return header + table + parts + raw[count * width :]


@pytest.mark.parametrize("transform", [t for t in Transform if t is not Transform.NONE])
@pytest.mark.parametrize("n", [9, 1_048_579, 2_400_001])  # 2.4 MB crosses a join block
def test_every_plane_transform_decodes_any_plane_storage(transform: Transform, n: int) -> None:
    """Chunks already stored on registries used any transform, each plane raw or zstd."""
    raw = (_floats(n // 4 + 1, "F32"))[:n]
    width = 2 if transform in (Transform.BYTEGROUP2, Transform.BYTEGROUP2_EXP) else 4
    for pattern in ([False] * width, [True] * width, [i == width - 1 for i in range(width)]):
        blob = _plane_chunk(raw, transform, pattern)
        assert bytes(decode_chunk(blob, expected_digest=digest_bytes(raw))) == raw


@pytest.mark.parametrize("dtype", ["F32", "BF16", None])
def test_decode_into_reads_a_receive_buffer_slice_and_writes_only_raw_length(
    dtype: str | None,
) -> None:
    raw = _floats(300_001, "F32")[: 1_200_003 if dtype != "BF16" else 600_001]
    blob = encode_chunk(raw, dtype)
    receive = bytearray(b"\xaa" * 7 + blob + b"\xbb" * 9)
    encoded = memoryview(receive)[7 : 7 + len(blob)]
    out = bytearray(b"\xcc" * (len(raw) + 13))
    assert decode_chunk_into(encoded, memoryview(out), digest_bytes(raw)) == len(raw)
    assert bytes(out[: len(raw)]) == raw
    assert bytes(out[len(raw) :]) == b"\xcc" * 13
    assert bytes(receive[:7]) == b"\xaa" * 7  # the receive buffer is only read
    assert bytes(receive[7 : 7 + len(blob)]) == blob
