"""Garbage collection: delete chunks no manifest references, once their grace has passed.

Mark-and-sweep over the index. The *mark* set is the ``manifest_chunks`` edges: a chunk
with an edge is in use, whatever tags say (an untagged manifest is still pullable by
digest). Manifests are deleted only by an explicit ``DELETE`` or by step 0, a repository's
retention policy, never by the mark or the sweep. A chunk with no edge is *garbage* once
its ``last_seen_at`` (or ``created_at`` for rows from before migration 0002) is older than
the grace period. The run has four steps:

0. **retention** — for each repository with a policy (``domain/retention.py``), delete
   the manifests it condemns, with their tags and edges, exactly as ``DELETE`` does: under
   the repository's lock, re-planned under that lock, at most ``retention.APPLY_BATCH``
   per transaction, each committed before the next step starts. To the steps below this
   is indistinguishable from someone deleting those manifests just before the run, so the
   races below are unchanged: a push reusing one of their chunks is race 2, 3 or 4, and a
   chunk whose ``last_seen_at`` is older than the grace is condemned in this same run;
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

from wreg_server.db import dialect
from wreg_server.db.models import Chunk, ChunkClaim, ManifestChunk, ManifestRow, Repository
from wreg_server.db.types import utcnow
from wreg_server.domain import retention
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_GRACE: Final = timedelta(hours=24)
SWEEP_BATCH: Final = 100
POLICY_BATCH: Final = 100
_ID_BATCH: Final = 500
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
    manifests_deleted: int = 0
    """Manifests retention policies deleted (would delete, in a dry run), step 0."""
    retention: tuple[RetentionDeletion, ...] = ()
    """Those manifests. A dry run's chunk figures include the chunks they would free."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["retention"] = [r.to_json() for r in self.retention]
        return out


@dataclass(frozen=True, slots=True)
class RetentionDeletion:
    """A manifest retention deleted (or, in a dry run, would delete)."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    created_at: datetime
    manifest_id: int = 0
    """Its id (not reported: a dry run uses it to count the chunks it would free)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "digest": self.digest,
            "tags": list(self.tags),
            "created_at": self.created_at.isoformat(),
        }


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
    retention: bool = True,
) -> GcResult:
    """Run one collection (see the module docstring); safe while servers keep serving.

    ``retention``: apply the repositories' retention policies first (step 0).
    """
    started = time.monotonic()
    gone = await apply_retention(sessions, dry_run=dry_run) if retention else []
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
            extra = await _freed_by(session, {g.manifest_id for g in gone}, cutoff)
            return GcResult(
                True,
                grace.total_seconds(),
                int(row[0]) + extra[0],
                int(row[1]) + extra[1],
                int(row[2]) + extra[2],
                int(young or 0) + extra[3],
                0,
                time.monotonic() - started,
                len(gone),
                tuple(gone),
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
        len(gone),
        tuple(gone),
    )
    log.info(
        "gc: deleted %d manifests by retention, %d chunks, freed %d bytes (%d raw); "
        "%d unreferenced kept in grace",
        len(gone),
        deleted,
        freed,
        raw_freed,
        result.chunks_in_grace,
    )
    return result


async def apply_retention(
    sessions: async_sessionmaker[AsyncSession], *, dry_run: bool = False
) -> list[RetentionDeletion]:
    """Step 0: every repository's retention policy, in keyset pages of ``POLICY_BATCH``
    policies; what was deleted (a dry run: what would be, deleting nothing)."""
    gone: list[RetentionDeletion] = []
    after = ""
    while True:
        async with sessions() as session:
            policies = await retention.list_all(session, after=after, limit=POLICY_BATCH)
        if not policies:
            return gone
        after = policies[-1].repository
        for policy in policies:
            async with sessions() as session:
                if dry_run:
                    verdicts = list((await retention.plan(session, policy.repository)).delete)
                else:
                    verdicts = await retention.apply(session, policy.repository)
            gone += (
                RetentionDeletion(policy.repository, v.digest, v.tags, v.created_at, v.id)
                for v in verdicts
            )
            if verdicts and not dry_run:
                log.info(
                    "gc: retention deleted %d manifests of %s", len(verdicts), policy.repository
                )


async def _freed_by(
    session: AsyncSession, doomed: set[int], cutoff: datetime
) -> tuple[int, int, int, int]:
    """For a dry run: the chunks that deleting manifests ``doomed`` would leave without an
    edge — (count, stored bytes, raw bytes) of those the sweep would then delete, and the
    count of those it would keep in grace."""
    if not doomed:
        return 0, 0, 0, 0
    ids = sorted(doomed)
    digests: set[str] = set()
    for at in range(0, len(ids), _ID_BATCH):
        digests.update(
            await session.scalars(
                select(ManifestChunk.chunk_digest).where(
                    ManifestChunk.manifest_id.in_(ids[at : at + _ID_BATCH])
                )
            )
        )
    ordered = sorted(digests)
    total = [0, 0, 0, 0]
    for at in range(0, len(ordered), dialect.SET_BATCH):
        batch = ordered[at : at + dialect.SET_BATCH]
        edges = await session.execute(
            select(ManifestChunk.chunk_digest, ManifestChunk.manifest_id).where(
                dialect.in_values(session, ManifestChunk.chunk_digest, batch)
            )
        )
        kept = {digest for digest, manifest_id in edges if manifest_id not in doomed}
        free = [d for d in batch if d not in kept]
        if not free:
            continue
        old = Chunk.gc_pending_since.is_not(None) | (_seen() < cutoff)
        sums = (
            func.count(),
            func.coalesce(func.sum(Chunk.stored_size), 0),
            func.coalesce(func.sum(Chunk.size), 0),
        )
        row = (
            await session.execute(
                select(*sums).where(dialect.in_values(session, Chunk.digest, free), old)
            )
        ).one()
        young = await session.scalar(
            select(func.count())
            .select_from(Chunk)
            .where(dialect.in_values(session, Chunk.digest, free), ~old)
        )
        for i, value in enumerate((row[0], row[1], row[2], young)):
            total[i] += int(value or 0)
    return total[0], total[1], total[2], total[3]


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
