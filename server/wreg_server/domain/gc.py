"""Garbage collection: delete chunks no manifest references, once their grace has passed.

Mark-and-sweep over the index. The *mark* set is the ``manifest_chunks`` edges: a chunk
with an edge is in use, whatever tags say (manifests are deleted only by an explicit
``DELETE``, never by GC — an untagged manifest is still pullable by digest). A chunk with
no edge is *garbage* once its ``last_seen_at`` (or ``created_at`` for rows from before
migration 0002) is older than the grace period. The run has three steps:

1. **repair** — un-condemn rows that a manifest references (see race 4 below);
2. **condemn** — in one statement, set ``gc_pending_since`` on every live, unreferenced
   row older than ``now - grace`` and commit. From then on the row is not live:
   missing-chunks queries report it missing and manifest commits refuse it;
3. **sweep** — in batches, one transaction each: ``DELETE`` the condemned, still
   unreferenced rows (``RETURNING`` what was deleted), delete those rows' objects from
   the store, *then* commit.

Order of deletion (index or store first?)
-----------------------------------------
Condemning commits *before* any object is touched, and the object is deleted before the
row's deletion commits. So at every instant, a crash included, each *live* row has its
object: a crash mid-sweep leaves condemned rows — deletion intents, not live entries —
whose objects may be gone, and the next run finishes them (deleting a missing object is
not an error). Deleting the object first without a condemned state would leave, after a
crash, live rows whose objects are gone; deleting and committing the rows first would let
an upload race the object deletion (race 3).

Races with pushes (P = a push, C = this collector)
--------------------------------------------------
A push is: (a) ``POST .../chunks/missing``; (b) ``PUT`` the missing chunks; (c) ``PUT``
the manifest, which checks every chunk is live and inserts its edges in one transaction.

1. *Chunk uploaded by P, manifest not yet committed.* The upload set ``last_seen_at`` to
   its time, so C leaves it alone for the grace period. A push slower than the grace
   loses it and falls into race 5's recovery.
2. *Chunk P was told is present.* (a) refreshes ``last_seen_at`` of the live chunks it
   finds — an ``UPDATE … WHERE gc_pending_since IS NULL`` committed before the answer is
   sent — so the same protection as (1) applies from the moment of the query (minus
   ``LAST_SEEN_RESOLUTION``, the staleness below which the refresh is skipped). The
   refresh and C's condemn statement touch the same row: whichever commits first wins,
   and the other re-checks its ``WHERE`` on the new row version (PostgreSQL re-evaluates
   an updated row under READ COMMITTED; SQLite runs writers one at a time). If C won, the
   chunk is not live any more and (a) reports it missing, so P uploads it.
3. *P uploads a chunk C is sweeping.* The upload ``put``s the object, then upserts the
   row (reviving a condemned one), then — inside the same transaction — checks the object
   is still there and puts it again if not, and only then commits. C deletes objects only
   while its transaction holds the condemned rows (row locks on PostgreSQL, the write lock
   on SQLite). Either C's transaction runs first: the upsert waits for it, finds the row
   gone (or condemned), and the existence check sees C's deletion and re-puts; or the
   upload's runs first: C's ``DELETE … WHERE gc_pending_since IS NOT NULL`` waits, then
   finds the row revived and skips it, so its object is never deleted.
4. *P commits a manifest over a chunk C condemns at the same moment.* The commit checked
   the chunk was live before C condemned it, and inserted an edge. C's sweep deletes only
   rows without edges (``NOT EXISTS``), and the foreign key ``manifest_chunks →
   chunks ON DELETE RESTRICT`` makes deleting a referenced row impossible under any
   interleaving (PostgreSQL's check waits for the committing transaction): the batch's
   ``DELETE`` fails before any object is touched — objects are deleted only after that
   statement succeeded — and the batch is retried digest by digest, skipping the
   referenced one. The repair step of the next run clears its stale condemnation.
5. *A chunk is gone by commit time anyway* (race 1 with a slow push, or a grace of 0).
   The commit answers ``MANIFEST_CHUNKS_MISSING`` with ``detail.missing``; the client
   uploads exactly those again and retries the commit once (``wreg/_push.py``).

Clocks: the grace is measured against timestamps written by the server replicas, using
the collector's clock; keep the grace well above any clock skew and the longest push
(default 24 h).

Not collected: objects in the store that have no row at all (an upload that crashed
between ``put`` and its row) — they are invisible and harmless, only wasted space.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wreg_server.db.models import Chunk, ChunkClaim, ManifestChunk, ManifestRow, Repository
from wreg_server.db.types import utcnow
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_GRACE: Final = timedelta(hours=24)
SWEEP_BATCH: Final = 100
_DELETE_CONCURRENCY: Final = 16

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1w`` (or combined: ``1h30m``)."""
    text = text.strip().lower()
    pos, seconds = 0, 0.0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 30m, 1h, 2d")
        seconds += float(match.group(1)) * _UNITS[match.group(2) or "s"]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class GcResult:
    """What a run did (or, for a dry run, would do)."""

    dry_run: bool
    grace_s: float
    chunks_deleted: int
    """Chunks removed from the index and the store (would be, in a dry run)."""
    bytes_freed: int
    """Stored (encoded) bytes of those chunks: what the object store gives back."""
    raw_bytes_freed: int
    chunks_in_grace: int
    """Unreferenced chunks kept because they are younger than the grace period."""
    chunks_skipped: int
    """Condemned chunks a manifest took back during the sweep (race 4), kept."""
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _unreferenced() -> Any:
    return ~exists().where(ManifestChunk.chunk_digest == Chunk.digest)


def _proven() -> Any:
    """A claim whose chunk a manifest of the claim's repository references."""
    return exists().where(
        ManifestChunk.chunk_digest == ChunkClaim.chunk_digest,
        ManifestRow.id == ManifestChunk.manifest_id,
        Repository.id == ManifestRow.repository_id,
        Repository.name == ChunkClaim.repository,
    )


def _seen() -> Any:
    return func.coalesce(Chunk.last_seen_at, Chunk.created_at)


async def collect(
    sessions: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: datetime | None = None,
) -> GcResult:
    """Run one collection (see the module docstring); safe while servers keep serving."""
    started = time.monotonic()
    now = now or utcnow()
    cutoff = now - grace
    pending = Chunk.gc_pending_since.is_not(None)
    garbage = and_(_unreferenced(), Chunk.gc_pending_since.is_(None), _seen() < cutoff)
    in_grace = and_(_unreferenced(), Chunk.gc_pending_since.is_(None), _seen() >= cutoff)

    async with sessions() as session:
        young = await session.scalar(select(func.count()).select_from(Chunk).where(in_grace))
        if dry_run:
            row = (
                await session.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(Chunk.stored_size), 0),
                        func.coalesce(func.sum(Chunk.size), 0),
                    ).where(and_(_unreferenced(), pending) | garbage)
                )
            ).one()
            return GcResult(
                True,
                grace.total_seconds(),
                int(row[0]),
                int(row[1]),
                int(row[2]),
                int(young or 0),
                0,
                time.monotonic() - started,
            )
        # 1. repair: a manifest took these back after an earlier run condemned them.
        await session.execute(
            update(Chunk)
            .where(pending, ~_unreferenced())
            .values(gc_pending_since=None)
            .execution_options(synchronize_session=False)
        )
        # 2. condemn.
        await session.execute(
            update(Chunk)
            .where(garbage)
            .values(gc_pending_since=now)
            .execution_options(synchronize_session=False)
        )
        # Tidy: claims a manifest of their own repository now proves (domain/access.py).
        # Done here rather than in each commit, which would pay a 35,000-row delete.
        await session.execute(
            delete(ChunkClaim).where(_proven()).execution_options(synchronize_session=False)
        )
        await session.commit()

    # 3. sweep, keyset-paginated over the condemned rows (this run's and any earlier).
    deleted = freed = raw_freed = skipped = 0
    after = ""
    while True:
        async with sessions() as session:
            batch = list(
                await session.scalars(
                    select(Chunk.digest)
                    .where(pending, Chunk.digest > after)
                    .order_by(Chunk.digest)
                    .limit(SWEEP_BATCH)
                )
            )
        if not batch:
            break
        after = batch[-1]
        try:
            rows = await _sweep(sessions, store, batch)
        except IntegrityError:
            # A manifest committed over one of these meanwhile (race 4): go one by one.
            rows = []
            for digest in batch:
                try:
                    rows += await _sweep(sessions, store, [digest])
                except IntegrityError:
                    log.info("gc: chunk %s was taken by a manifest; kept", digest)
        skipped += len(batch) - len(rows)
        deleted += len(rows)
        freed += sum(stored for _, _, stored in rows)
        raw_freed += sum(size for _, size, _ in rows)

    result = GcResult(
        False,
        grace.total_seconds(),
        deleted,
        freed,
        raw_freed,
        int(young or 0),
        skipped,
        time.monotonic() - started,
    )
    log.info(
        "gc: deleted %d chunks, freed %d bytes (%d raw); %d unreferenced kept in grace",
        deleted,
        freed,
        raw_freed,
        result.chunks_in_grace,
    )
    return result


async def _sweep(
    sessions: async_sessionmaker[AsyncSession], store: ObjectStore, digests: list[str]
) -> list[tuple[str, int, int]]:
    """Delete the still-condemned, unreferenced rows among ``digests`` and their objects.

    The objects go while this transaction holds the rows; the rows' deletion commits
    last. Returns (digest, raw size, stored size) of what was deleted.
    """
    async with sessions() as session:
        result = await session.execute(
            delete(Chunk)
            .where(
                Chunk.digest.in_(digests),
                Chunk.gc_pending_since.is_not(None),
                _unreferenced(),
            )
            .returning(Chunk.digest, Chunk.size, Chunk.stored_size)
            .execution_options(synchronize_session=False)
        )
        rows = [(str(d), int(s), int(st)) for d, s, st in result]
        slots = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def drop(digest: str) -> None:
            async with slots:
                await store.delete(chunk_key(digest))

        await asyncio.gather(*(drop(d) for d, _, _ in rows))
        await session.commit()
    return rows
