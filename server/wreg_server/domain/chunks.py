"""Chunks: which ones the registry lacks, and accepting one upload.

A chunk becomes visible only when its ``chunks`` row exists, and the row is written only
after the encoded bytes were decoded, verified against the digest and stored atomically.
An object written by a request that then failed is invisible (and GC may drop it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import islice

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import validate_digest
from wreg.core.encoding import decode_chunk, encoded_raw_length
from wreg.core.errors import InvalidInput, NotFound
from wreg_server.db import dialect
from wreg_server.db.models import Chunk
from wreg_server.db.types import utcnow
from wreg_server.domain.views import ChunkInfo
from wreg_server.objectstore import ObjectNotFound, ObjectStore, chunk_key

log = logging.getLogger(__name__)

# Digests per IN (...) query: well under SQLite's and PostgreSQL's bind-parameter limits.
_BATCH = 500


def _batched(items: Iterable[str], n: int) -> Iterable[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, n)):
        yield batch


async def sizes_of(session: AsyncSession, digests: Iterable[str]) -> dict[str, int]:
    """Raw size of each of ``digests`` the registry holds; absent digests are left out."""
    found: dict[str, int] = {}
    for batch in _batched(digests, _BATCH):
        query = select(Chunk.digest, Chunk.size).where(Chunk.digest.in_(batch))
        rows = await session.execute(query)
        found.update((digest, size) for digest, size in rows)
    return found


async def missing(session: AsyncSession, digests: Sequence[str]) -> list[str]:
    """The digests the registry lacks, in request order, each once."""
    unique = list(dict.fromkeys(validate_digest(d) for d in digests))
    present = await sizes_of(session, unique)
    return [d for d in unique if d not in present]


async def get(session: AsyncSession, digest: str) -> ChunkInfo:
    """The recorded chunk; raises ``NotFound`` (CHUNK_UNKNOWN)."""
    validate_digest(digest)
    row = await session.get(Chunk, digest)
    if row is None:
        raise _unknown(digest)
    return ChunkInfo(row.digest, row.size, row.stored_size)


async def read(session: AsyncSession, store: ObjectStore, digest: str) -> tuple[ChunkInfo, bytes]:
    """A recorded chunk's encoded bytes; a row whose object is gone reads as unknown."""
    info = await get(session, digest)
    try:
        return info, await store.get(chunk_key(digest))
    except ObjectNotFound:
        log.error("chunk %s is in the index but not in the object store", digest)
        raise _unknown(digest) from None


async def upload(
    session: AsyncSession, store: ObjectStore, digest: str, blob: bytes, *, max_raw: int
) -> tuple[ChunkInfo, bool]:
    """Verify and store one encoded chunk; returns (chunk, True if it is new).

    The header is checked before decoding so an oversized raw length is refused without
    allocating it; decoding (decompress + blake3) runs in a worker thread.
    """
    validate_digest(digest)
    raw_length = encoded_raw_length(blob)
    if raw_length > max_raw:
        raise InvalidInput(
            f"chunk raw length {raw_length} exceeds the limit of {max_raw} bytes",
            code="CHUNK_TOO_LARGE",
            detail={"size": raw_length, "limit": max_raw},
        )
    await to_thread.run_sync(partial(decode_chunk, blob, expected_digest=digest))
    info = ChunkInfo(digest, raw_length, len(blob))
    key = chunk_key(digest)
    existing = await session.get(Chunk, digest)
    if existing is not None and await store.exists(key):
        return ChunkInfo(existing.digest, existing.size, existing.stored_size), False
    await store.put(key, blob)
    stmt = dialect.insert(session, Chunk).values(
        digest=digest, size=info.size, stored_size=info.stored_size, created_at=utcnow()
    )
    # A concurrent upload of the same chunk may have recorded it first: same content.
    stmt = stmt.on_conflict_do_update(
        index_elements=["digest"], set_={"stored_size": info.stored_size}
    )
    await session.execute(stmt)
    await session.commit()
    return info, existing is None


def _unknown(digest: str) -> NotFound:
    return NotFound(f"chunk {digest} is unknown", code="CHUNK_UNKNOWN", detail={"digest": digest})
