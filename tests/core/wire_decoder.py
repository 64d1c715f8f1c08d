"""A decoder for wreg's wire format written from ``docs/WIRE-FORMAT.md`` alone.

It stands for a client in another language: it imports nothing of ``wreg`` (only the
standard library, ``blake3``, ``zstandard`` and numpy), and ``tests/core/test_wire_spec.py``
checks both that and that it decodes what wreg writes. Section numbers refer to the spec.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any, Final

import blake3
import numpy as np
import numpy.typing as npt
import zstandard

MAGIC: Final = b"WRGC"
HEADER: Final = struct.Struct("<4sBBBBQ")  # §3: magic, version, codec, transform, 0, raw length
PLANE_ENTRY: Final = struct.Struct("<BI")  # §3.2: kind, stored length
FRAME: Final = struct.Struct("<32sI")  # §4: raw digest, encoded length
MAX_RAW: Final = 16 * 1024 * 1024
WIDTH: Final = {1: 2, 2: 4, 3: 2, 4: 4}  # §3.2: transform id -> word width
IDENTITY_CONTEXT: Final = "wreg 2026-12 file identity v2"


class WireError(ValueError):
    """The bytes are not what the spec allows."""


def digest_of(data: bytes | bytearray | memoryview) -> str:
    """§1: ``blake3:<hex>`` of raw bytes."""
    return "blake3:" + blake3.blake3(data).hexdigest()


def file_identity(chunks: list[tuple[str, int]]) -> str:
    """§1: a schema-2 file digest from its ``(chunk digest, size)`` list."""
    packed = b"".join(
        bytes.fromhex(d.removeprefix("blake3:")) + struct.pack("<Q", n) for d, n in chunks
    )
    return "blake3:" + blake3.blake3(packed, derive_key_context=IDENTITY_CONTEXT).hexdigest()


def parse_manifest(body: bytes, digest: str) -> dict[str, Any]:
    """§2: check the manifest's digest, canonical form and file identities; the document."""
    if digest_of(body) != digest:
        raise WireError("manifest does not match its digest")
    doc: dict[str, Any] = json.loads(body)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if canonical.encode("utf-8") != body:
        raise WireError("manifest is not canonical JSON")
    for f in doc["files"]:
        chunks = [(c["digest"], c["size"]) for c in f["chunks"]]
        if sum(n for _, n in chunks) != f["size"]:
            raise WireError(f"{f['path']}: chunk sizes do not add up")
        if doc["schema"] == 2 and file_identity(chunks) != f["digest"]:
            raise WireError(f"{f['path']}: file digest is not its chunk list's identity")
    return doc


def header(encoded: bytes | memoryview) -> tuple[int, int, int]:
    """§3: (codec, transform, raw length) of an encoded chunk."""
    if len(encoded) < HEADER.size:
        raise WireError("shorter than the 16-byte header")
    magic, version, codec, transform, reserved, raw_length = HEADER.unpack_from(encoded)
    if magic != MAGIC or version != 1 or reserved != 0:
        raise WireError("bad magic, version or reserved byte")
    if codec not in (0, 1) or transform not in (0, 1, 2, 3, 4):
        raise WireError(f"unknown codec {codec} or transform {transform}")
    if raw_length > MAX_RAW:
        raise WireError("raw length over 16 MiB")
    return codec, transform, raw_length


def _zstd(frame: bytes | memoryview, size: int) -> bytes:
    """§3.1/§3.4: exactly one zstd frame decoding to exactly ``size`` bytes."""
    if size == 0:
        raise WireError("zstd for no bytes")
    declared = zstandard.get_frame_parameters(frame).content_size
    if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
        raise WireError("zstd frame declares another size")
    inflater = zstandard.ZstdDecompressor(max_window_size=MAX_RAW).decompressobj()
    out = inflater.decompress(bytes(frame))
    if len(out) != size or not inflater.eof or inflater.unused_data:
        raise WireError("zstd frame does not decode to the raw length, or has bytes after it")
    return out


def _join(planes: list[npt.NDArray[np.uint32]], transform: int) -> npt.NDArray[Any]:
    """§3.2: rebuild each word from its planes."""
    if transform == 1:
        return planes[1] << 8 | planes[0]
    if transform == 2:
        return planes[3] << 24 | planes[2] << 16 | planes[1] << 8 | planes[0]
    if transform == 3:
        return (planes[0] & 0x80) << 8 | planes[1] << 7 | (planes[0] & 0x7F)
    high = (planes[2] & 0x80) << 8 | planes[3] << 7 | (planes[2] & 0x7F)
    return high << 16 | planes[1] << 8 | planes[0]


def _planes(payload: memoryview, transform: int, raw_length: int) -> tuple[bytes, list[int]]:
    """§3.2: the raw bytes of a byte-plane payload, and each plane's kind."""
    width = WIDTH[transform]
    count, tail = divmod(raw_length, width)
    at = width * PLANE_ENTRY.size
    if len(payload) < at:
        raise WireError("truncated plane table")
    planes: list[npt.NDArray[np.uint32]] = []
    kinds: list[int] = []
    for i in range(width):
        kind, stored = PLANE_ENTRY.unpack_from(payload, i * PLANE_ENTRY.size)
        part = payload[at : at + stored]
        if len(part) != stored:
            raise WireError("truncated plane")
        at += stored
        if kind == 0:
            if stored != count:
                raise WireError("raw plane is not count bytes")
            data = bytes(part)
        elif kind == 1:
            data = _zstd(part, count)
        else:
            raise WireError(f"unknown plane kind {kind}")
        planes.append(np.frombuffer(data, dtype=np.uint8).astype(np.uint32))
        kinds.append(kind)
    if len(payload) - at != tail:
        raise WireError("payload does not end after the tail")
    words = _join(planes, transform).astype("<u2" if width == 2 else "<u4")
    return words.tobytes() + bytes(payload[at:]), kinds


def decode(encoded: bytes | memoryview, digest: str | None = None) -> bytes:
    """§3 + §3.5: the raw bytes of an encoded chunk, checked against ``digest`` if given."""
    return decode_with_kinds(encoded, digest)[0]


def decode_with_kinds(
    encoded: bytes | memoryview, digest: str | None = None
) -> tuple[bytes, list[int]]:
    """``decode``, plus the kind of each byte plane (empty without a transform)."""
    codec, transform, raw_length = header(encoded)
    payload = memoryview(encoded)[HEADER.size :]
    kinds: list[int] = []
    if transform:
        raw, kinds = _planes(payload, transform, raw_length)
    elif codec == 1:
        raw = _zstd(payload, raw_length)
    elif len(payload) != raw_length:
        raise WireError("raw payload is not the raw length")
    else:
        raw = bytes(payload)
    if digest is not None and digest_of(raw) != digest:
        raise WireError(f"chunk does not match {digest}")
    return raw, kinds


def frames(body: bytes) -> Iterator[tuple[str, memoryview]]:
    """§4: each ``(digest, encoded chunk)`` of a body of frames, in order."""
    view = memoryview(body)
    at = 0
    while at < len(view):
        if len(view) - at < FRAME.size:
            raise WireError("truncated frame header")
        raw_digest, length = FRAME.unpack_from(view, at)
        at += FRAME.size
        if length > len(view) - at:
            raise WireError("frame length past the end of the body")
        yield "blake3:" + raw_digest.hex(), view[at : at + length]
        at += length
