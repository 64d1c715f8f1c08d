"""Chunks: which ones are stored, and accepting one upload (which ones a repository may
see is ``domain/access.py``).

A chunk becomes visible only when its ``chunks`` row exists, and the row is written only
after the encoded bytes were decoded, verified against the digest and stored atomically.
An object written by a request that then failed is invisible.

A *live* chunk is one whose row exists and is not condemned by the garbage collector
(``gc_pending_since`` is NULL). Missing-chunks queries and manifest commits only count
live chunks; both the query and a re-upload refresh ``last_seen_at``, the clock the
collector's grace period runs on. ``domain/gc.py`` explains why that keeps pushes safe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from itertools import islice
from typing import Final

from anyio import to_thread
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.encoding import decode_chunk, encoded_raw_length
from wreg.core.errors import ErrorCode, WregError
from wreg_server.db import dialect
from wreg_server.db.models import Chunk, ChunkClaim
from wreg_server.db.types import utcnow
from wreg_server.domain.layout import chunk_key
from wreg_server.domain.views import ChunkInfo
from wreg_server.metrics import current as metrics
from wreg_server.objectstore import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

# Digests per IN (...) query: well under SQLite's and PostgreSQL's bind-parameter limits.
_BATCH = 500

# ``last_seen_at`` is rewritten only when older than this, so re-pushing a large model does
# not rewrite every chunk row each time. A chunk found present is therefore protected for
# at least (GC grace - LAST_SEEN_RESOLUTION) afterwards; keep the grace well above it.
LAST_SEEN_RESOLUTION: Final = timedelta(minutes=5)

_LIVE = Chunk.gc_pending_since.is_(None)


def _batched(items: Iterable[str], n: int) -> Iterable[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, n)):
        yield batch


async def sizes_of(session: AsyncSession, digests: Iterable[str]) -> dict[str, int]:
    """Raw size of each of ``digests`` that is live; absent or condemned ones are left out."""
    found: dict[str, int] = {}
    for batch in _batched(digests, _BATCH):
        query = select(Chunk.digest, Chunk.size).where(Chunk.digest.in_(batch), _LIVE)
        rows = await session.execute(query)
        found.update((digest, size) for digest, size in rows)
    return found


async def refresh(session: AsyncSession, digests: Iterable[str]) -> None:
    """Set ``last_seen_at`` to now on those of ``digests`` that are live and stale.

    Only rows not refreshed within ``LAST_SEEN_RESOLUTION`` are written; the caller commits.
    """
    now = utcnow()
    stale = func.coalesce(Chunk.last_seen_at, Chunk.created_at) < now - LAST_SEEN_RESOLUTION
    for batch in _batched(digests, _BATCH):
        await session.execute(
            update(Chunk)
            .where(Chunk.digest.in_(batch), _LIVE, stale)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )


async def get(session: AsyncSession, digest: str) -> ChunkInfo:
    """The recorded chunk; raises ``NotFound`` (CHUNK_UNKNOWN)."""
    row = await session.get(Chunk, digest)
    if row is None:
        raise unknown(digest)
    return ChunkInfo(row.digest, row.size, row.stored_size)


async def fetch(session: AsyncSession, store: ObjectStore, digest: str) -> bytes | str:
    """A recorded chunk's encoded bytes, or a URL to fetch them from when the store hands
    out direct URLs (S3 with presigned redirects on); raises ``NotFound`` (CHUNK_UNKNOWN).

    The URL is not checked against the store (that would cost a request per download):
    an object lost behind the index's back fails at the URL's host with a 404.
    """
    await get(session, digest)
    url = await store.presigned_url(chunk_key(digest))
    return url if url is not None else await _read_object(store, digest)


async def _read_object(store: ObjectStore, digest: str) -> bytes:
    try:
        return await store.get(chunk_key(digest))
    except ObjectNotFound:
        log.error("chunk %s is in the index but not in the object store", digest)
        raise unknown(digest) from None


async def upload(
    session: AsyncSession,
    store: ObjectStore,
    digest: str,
    encoded: bytes,
    *,
    max_raw: int,
    through: str | None = None,
) -> tuple[ChunkInfo, bool]:
    """Verify and store one encoded chunk; returns (chunk, True if it is new).

    The header is checked before decoding so an oversized raw length is refused without
    allocating it; decoding (decompress + blake3) runs in a worker thread. ``through``
    names the repository the bytes were uploaded through: the upload is recorded as its
    proof of possession (``chunk_claims``, ``domain/access.py``) in the same transaction.
    """
    raw_length = encoded_raw_length(encoded)
    if raw_length > max_raw:
        raise ErrorCode.CHUNK_TOO_LARGE.error(
            f"chunk raw length {raw_length} exceeds the limit of {max_raw} bytes",
            detail={"size": raw_length, "limit": max_raw},
        )
    await to_thread.run_sync(partial(decode_chunk, encoded, expected_digest=digest))
    info = ChunkInfo(digest, raw_length, len(encoded))
    key = chunk_key(digest)
    existing = await session.get(Chunk, digest)
    live = existing is not None and existing.gc_pending_since is None
    if existing is not None and live and await store.exists(key):
        await refresh(session, [digest])
        if through is not None:
            await _claim(session, through, digest)
        await session.commit()
        metrics().chunk_upload(False, existing.size)
        return ChunkInfo(existing.digest, existing.size, existing.stored_size), False
    await store.put(key, encoded)
    now = utcnow()
    stmt = dialect.insert(session, Chunk).values(
        digest=digest,
        size=info.size,
        stored_size=info.stored_size,
        created_at=now,
        last_seen_at=now,
        gc_pending_since=None,
    )
    # A concurrent upload of the same chunk may have recorded it first: same content.
    # A row the collector condemned is revived (and its clock restarted).
    stmt = stmt.on_conflict_do_update(
        index_elements=["digest"],
        set_={"stored_size": info.stored_size, "last_seen_at": now, "gc_pending_since": None},
    )
    await session.execute(stmt)
    # This transaction now holds the row (PostgreSQL: row lock; SQLite: the write lock), so
    # no collector can be between deleting this row and deleting its object: a sweep that
    # removed our object after the put above has committed. Put it back if so.
    if not await store.exists(key):
        log.warning("chunk %s was collected during its upload; storing it again", digest)
        await store.put(key, encoded)
    if through is not None:
        await _claim(session, through, digest)
    await session.commit()
    metrics().chunk_upload(True, info.size)
    return info, not live


async def _claim(session: AsyncSession, repository: str, digest: str) -> None:
    stmt = dialect.insert(session, ChunkClaim).values(
        repository=repository, chunk_digest=digest, created_at=utcnow()
    )
    await session.execute(
        stmt.on_conflict_do_nothing(index_elements=["repository", "chunk_digest"])
    )


def unknown(digest: str) -> WregError:
    """The answer for a chunk that is not stored (or not readable where it was asked for)."""
    return ErrorCode.CHUNK_UNKNOWN.error(f"chunk {digest} is unknown", detail={"digest": digest})
