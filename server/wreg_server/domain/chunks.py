"""Chunks: which ones are stored, and accepting one upload (which ones a repository may
see is ``domain/access.py``).

A chunk becomes visible only when its ``chunks`` row exists, and the row is written only
after the encoded bytes were decoded, verified against the digest and stored atomically.
An object written by a request that then failed is invisible.

A *live* chunk is one whose row exists and is not condemned by the garbage collector
(``gc_pending_since`` is NULL). Missing-chunks queries and manifest commits only count
live chunks; both the query and a re-upload refresh ``last_seen_at``, the clock the
collector's grace period runs on. ``domain/gc.py`` explains why that keeps pushes safe.

Batches (``upload_many``, ``infos_of``, ``read_many``) do for many chunks what the
single-chunk functions do for one, with set-based index work — a few ``IN (...)``
queries and one multi-row ``INSERT`` per 500 chunks, one commit — and the object store
calls batched (``ObjectStore.put_many`` / ``exists_many``) or issued concurrently: a
chunk is still one stored object, verified alone, visible only once its row exists.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from itertools import islice
from typing import Final, TypeVar

from anyio import to_thread
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.encoding import decode_chunk_into, encoded_raw_length
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
# Object store calls of one batch in flight at once (each a worker thread or an S3 request).
_STORE_CONCURRENCY: Final = 16

_T = TypeVar("_T")
_R = TypeVar("_R")


class _Scratch:
    """Decode buffers reused across uploads: verifying an upload decodes it only to hash
    the raw bytes, and fresh memory for each chunk costs more than the decoding
    (``bench/codec.py``). At most ``keep`` buffers are kept, each as large as the
    largest chunk it decoded; a thread that finds none free decodes into a fresh one."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def verify(self, encoded: bytes | memoryview, digest: str, raw_length: int) -> None:
        """Decode ``encoded`` and check it against ``digest`` (worker thread)."""
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None or len(buf) < raw_length:
            buf = bytearray(raw_length)
        try:
            decode_chunk_into(encoded, memoryview(buf), digest)
        finally:
            with self._lock:
                if len(self._free) < self.keep:
                    self._free.append(buf)


_scratch = _Scratch()

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
    for batch in _batched(digests, dialect.SET_BATCH):
        query = select(Chunk.digest, Chunk.size).where(
            dialect.in_values(session, Chunk.digest, batch), _LIVE
        )
        rows = await session.execute(query)
        found.update((digest, size) for digest, size in rows)
    return found


async def refresh(session: AsyncSession, digests: Iterable[str]) -> None:
    """Set ``last_seen_at`` to now on those of ``digests`` that are live and stale.

    Only rows not refreshed within ``LAST_SEEN_RESOLUTION`` are written; the caller commits.
    """
    now = utcnow()
    stale = func.coalesce(Chunk.last_seen_at, Chunk.created_at) < now - LAST_SEEN_RESOLUTION
    for batch in _batched(digests, dialect.SET_BATCH):
        await session.execute(
            update(Chunk)
            .where(dialect.in_values(session, Chunk.digest, batch), _LIVE, stale)
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
    await to_thread.run_sync(_scratch.verify, encoded, digest, raw_length)
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


async def _each(items: Sequence[_T], call: Callable[[_T], Awaitable[_R]]) -> list[_R]:
    """``call`` on every item, ``_STORE_CONCURRENCY`` at a time; results in order."""
    slots = asyncio.Semaphore(_STORE_CONCURRENCY)

    async def one(item: _T) -> _R:
        async with slots:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def infos_of(session: AsyncSession, digests: Iterable[str]) -> dict[str, ChunkInfo]:
    """The recorded chunk of each of ``digests`` that has a row (as ``get``: condemned
    rows count, their objects are still there until the sweep)."""
    found: dict[str, ChunkInfo] = {}
    for batch in _batched(dict.fromkeys(digests), dialect.SET_BATCH):
        query = select(Chunk.digest, Chunk.size, Chunk.stored_size).where(
            dialect.in_values(session, Chunk.digest, batch)
        )
        for digest, size, stored_size in await session.execute(query):
            found[digest] = ChunkInfo(digest, size, stored_size)
    return found


async def read_many(store: ObjectStore, digests: Sequence[str]) -> list[bytes]:
    """The encoded bytes of each recorded chunk of ``digests``, in order (duplicates read
    once); raises ``NotFound`` (CHUNK_UNKNOWN) for an object the store lost.

    From a filesystem store the files are read in one worker thread (a thread hop per
    chunk would cost more than reading a small one); from any other store the objects
    are fetched concurrently.
    """
    unique = list(dict.fromkeys(digests))
    paths = [store.local_path(chunk_key(d)) for d in unique]
    if all(p is not None for p in paths):

        def read_all() -> list[bytes | None]:
            out: list[bytes | None] = []
            for path in paths:
                assert path is not None  # noqa: S101 - narrows: checked just above
                try:
                    out.append(path.read_bytes())
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    out.append(None)
            return out

        found = await to_thread.run_sync(read_all)
        by_digest: dict[str, bytes] = {}
        for digest, data in zip(unique, found, strict=True):
            if data is None:
                log.error("chunk %s is in the index but not in the object store", digest)
                raise unknown(digest)
            by_digest[digest] = data
    else:
        by_digest = dict(
            zip(unique, await _each(unique, lambda d: _read_object(store, d)), strict=True)
        )
    return [by_digest[d] for d in digests]


def _verify_all(items: Sequence[tuple[str, memoryview]], max_raw: int) -> list[int]:
    """Check each chunk's header, then decode and verify it (worker thread); returns the
    raw lengths. The first bad one raises, naming its digest and frame."""
    lengths: list[int] = []
    for index, (digest, encoded) in enumerate(items):
        try:
            raw_length = encoded_raw_length(encoded)
            if raw_length > max_raw:
                raise ErrorCode.CHUNK_TOO_LARGE.error(
                    f"chunk raw length {raw_length} exceeds the limit of {max_raw} bytes",
                    detail={"size": raw_length, "limit": max_raw},
                )
            _scratch.verify(encoded, digest, raw_length)
        except WregError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            raise exc.code.error(
                f"frame {index} ({digest}): {exc.message}",
                detail={**detail, "digest": digest, "frame": index},
            ) from None
        lengths.append(raw_length)
    return lengths


async def upload_many(
    session: AsyncSession,
    store: ObjectStore,
    items: Sequence[tuple[str, memoryview]],
    *,
    max_raw: int,
    through: str | None = None,
    encoded_here: bool = False,
) -> list[tuple[ChunkInfo, bool]]:
    """``upload`` for a batch, all or nothing as to verification: every chunk is decoded
    and verified before any is stored, and one bad chunk refuses the whole batch (its
    error names the digest and frame). Returns, per item in order, (chunk, True if new).

    ``encoded_here``: the server encoded these chunks itself from bytes it hashed
    (``domain/ingest.py``), so decoding them again would only repeat that work; their
    headers are still parsed for the raw lengths.

    Set-based: the rows are looked up, written (one executemany upsert),
    refreshed and claimed in a few statements and one commit. The collector race is
    handled as in ``upload``: objects are re-checked (and put back) after the rows are
    written, while this transaction holds them. A store failure midway leaves some
    chunks stored and invisible (no row) or visible — the same as single uploads that
    failed partway — and the client sends the batch again.
    """
    if encoded_here:
        lengths = [encoded_raw_length(encoded) for _, encoded in items]
    else:
        lengths = await to_thread.run_sync(_verify_all, items, max_raw)
    unique: dict[str, tuple[memoryview, int]] = {}
    for (digest, encoded), length in zip(items, lengths, strict=True):
        unique.setdefault(digest, (encoded, length))
    rows: dict[str, tuple[int, int, bool]] = {}
    for batch in _batched(unique, dialect.SET_BATCH):
        query = select(Chunk.digest, Chunk.size, Chunk.stored_size, Chunk.gc_pending_since).where(
            dialect.in_values(session, Chunk.digest, batch)
        )
        for digest, size, stored_size, condemned in await session.execute(query):
            rows[digest] = (size, stored_size, condemned is None)
    live = [d for d in unique if d in rows and rows[d][2]]
    present = await store.exists_many([chunk_key(d) for d in live])
    kept = {d for d, there in zip(live, present, strict=True) if there}
    fresh = [d for d in unique if d not in kept]

    async def put(digests: list[str]) -> None:
        await store.put_many([(chunk_key(d), bytes(unique[d][0])) for d in digests])

    await put(fresh)
    now = utcnow()
    if fresh:
        stmt = dialect.insert(session, Chunk.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["digest"],
            set_={
                "stored_size": stmt.excluded.stored_size,
                "last_seen_at": now,
                "gc_pending_since": None,
            },
        )
        rows_in = [
            {
                "digest": d,
                "size": unique[d][1],
                "stored_size": len(unique[d][0]),
                "created_at": now,
                "last_seen_at": now,
                "gc_pending_since": None,
            }
            for d in fresh
        ]
        await session.execute(stmt, rows_in)  # one executemany, compiled once
    # As in ``upload``: this transaction now holds the rows; put back what a sweep took.
    after = await store.exists_many([chunk_key(d) for d in fresh])
    lost = [d for d, there in zip(fresh, after, strict=True) if not there]
    if lost:
        log.warning("%d chunk(s) were collected during their upload; storing again", len(lost))
        await put(lost)
    await refresh(session, kept)
    if through is not None:
        await _claim_many(session, through, list(unique))
    await session.commit()
    answers: dict[str, tuple[ChunkInfo, bool]] = {}
    for digest, (encoded, length) in unique.items():
        if digest in kept:
            size, stored_size, _live = rows[digest]
            answers[digest] = (ChunkInfo(digest, size, stored_size), False)
            metrics().chunk_upload(False, size)
        else:
            new = not (digest in rows and rows[digest][2])
            answers[digest] = (ChunkInfo(digest, length, len(encoded)), new)
            metrics().chunk_upload(True, length)
    return [answers[d] for d, _encoded in items]


async def _claim_many(session: AsyncSession, repository: str, digests: list[str]) -> None:
    if not digests:
        return
    now = utcnow()
    stmt = dialect.insert(session, ChunkClaim.__table__).on_conflict_do_nothing(
        index_elements=["repository", "chunk_digest"]
    )
    await session.execute(
        stmt, [{"repository": repository, "chunk_digest": d, "created_at": now} for d in digests]
    )


def unknown(digest: str) -> WregError:
    """The answer for a chunk that is not stored (or not readable where it was asked for)."""
    return ErrorCode.CHUNK_UNKNOWN.error(f"chunk {digest} is unknown", detail={"digest": digest})
