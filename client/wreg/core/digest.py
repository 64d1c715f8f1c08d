"""Content digests: ``blake3:<64 lowercase hex>`` of raw (uncompressed) bytes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import blake3

from wreg.core.errors import ErrorCode

ALGORITHM: Final = "blake3"
PREFIX: Final = f"{ALGORITHM}:"
"""What every digest starts with; the rest is its hex (``hex_of`` / ``digest_of_hex``)."""
HEX_PATTERN: Final = r"[0-9a-f]{64}"
"""The hex part of a digest: how blobs, manifests and partial files are named on disk."""
DIGEST_PATTERN: Final = PREFIX + HEX_PATTERN
"""The digest grammar (also published in the server's OpenAPI schema)."""
_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)
# Hashing above this size is worth blake3's own threads (measured ~1.3x on 2 cores).
_MULTITHREAD_MIN: Final = 8 << 20


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """The digest of ``data``."""
    threads = blake3.blake3.AUTO if len(data) >= _MULTITHREAD_MIN else 1
    return PREFIX + blake3.blake3(data, max_threads=threads).hexdigest()


# BLAKE3's key derivation mode is domain-separated from plain hashing inside the
# algorithm, so no file's content hash can equal any chunk list's identity.
_IDENTITY_CONTEXT: Final = "wreg 2026-12 file identity v2"


def file_identity(chunks: Iterable[tuple[str, int]]) -> str:
    """A file's identity in manifest schema 2: the digest of its ordered chunk list
    (each chunk's 32 digest bytes, then its raw size as 8 bytes little-endian).

    A file assembled from chunks that each match their digest is, by construction, the
    file this names: nothing needs to be read back. Computed by whoever holds the chunk
    list (pusher, server, puller), never taken from a peer.
    """
    skip = len(PREFIX)
    packed = b"".join(bytes.fromhex(d[skip:]) + n.to_bytes(8, "little") for d, n in chunks)
    return PREFIX + blake3.blake3(packed, derive_key_context=_IDENTITY_CONTEXT).hexdigest()


def is_digest(value: str) -> bool:
    return _DIGEST_RE.fullmatch(value) is not None


def validate_digest(value: str) -> str:
    """Return ``value`` if it is a well-formed digest, else raise ``InvalidInput``."""
    if not isinstance(value, str) or not is_digest(value):
        raise ErrorCode.DIGEST_INVALID.error(
            f"invalid digest {value!r}: expected {PREFIX}<64 lowercase hex>",
        )
    return value


def hex_of(digest: str) -> str:
    """The hex part of a validated digest (used for object keys and cache file names)."""
    return validate_digest(digest)[len(PREFIX) :]


def digest_of_hex(hex_digest: str) -> str:
    """The digest whose hex part is ``hex_digest`` (the inverse of ``hex_of``); raises
    ``InvalidInput`` unless it is 64 lowercase hex digits."""
    return validate_digest(PREFIX + hex_digest)


class Hasher:
    """Incremental whole-file digest."""

    def __init__(self) -> None:
        self._h = blake3.blake3(max_threads=blake3.blake3.AUTO)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def digest(self) -> str:
        return PREFIX + self._h.hexdigest()
