"""Scrub: read every stored chunk back, decode it and check it against its digest.

Uploads are verified before they become visible, so a bad object means the bytes changed
at rest (disk or bucket corruption, an operator's mistake) or vanished. Clients already
refuse such bytes (every chunk is verified on pull); the scrub is how the *server* finds
out, names the models affected, and lets an operator act (restore from a replica or
re-push the model) before a user trips over it. It only reads: nothing is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wreg.core.encoding import decode_chunk
from wreg.core.errors import IntegrityError, InvalidInput
from wreg_server.db.models import Chunk, ManifestChunk, ManifestRow, Repository
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectNotFound, ObjectStore

_BATCH = 500


@dataclass
class ScrubResult:
    chunks_checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    affected: list[str] = field(default_factory=list)
    """``repository@manifest-digest`` of every manifest holding a bad chunk."""

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chunks_checked": self.chunks_checked,
            "bytes_checked": self.bytes_checked,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "affected": self.affected,
        }


async def scrub(sessions: async_sessionmaker[AsyncSession], store: ObjectStore) -> ScrubResult:
    """Check every chunk the index records (in digest order, a batch at a time)."""
    result = ScrubResult()
    after = ""
    while True:
        async with sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(Chunk.digest)
                        .where(Chunk.digest > after)
                        .order_by(Chunk.digest)
                        .limit(_BATCH)
                    )
                )
                .scalars()
                .all()
            )
        if not rows:
            break
        for digest in rows:
            try:
                encoded = await store.get(chunk_key(digest))
            except ObjectNotFound:
                result.missing.append(digest)
                continue
            try:
                await to_thread.run_sync(decode_chunk, encoded, digest)
            except (InvalidInput, IntegrityError):
                result.corrupt.append(digest)
            result.chunks_checked += 1
            result.bytes_checked += len(encoded)
        after = rows[-1]
    bad = result.corrupt + result.missing
    if bad:
        async with sessions() as session:
            query = (
                select(Repository.name, ManifestRow.digest)
                .join(ManifestRow, ManifestRow.repository_id == Repository.id)
                .join(ManifestChunk, ManifestChunk.manifest_id == ManifestRow.id)
                .where(ManifestChunk.chunk_digest.in_(bad))
                .distinct()
            )
            result.affected = sorted(f"{n}@{d}" for n, d in (await session.execute(query)).all())
    return result
