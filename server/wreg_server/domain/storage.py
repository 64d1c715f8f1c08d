"""Storage accounting: what each repository would take as plain copies, and what it takes.

Per repository, over every manifest it holds (tagged or not, until GC deletes it)::

    logical  = Σ file sizes over all its manifests   (plain copies of every version)
    unique   = Σ raw size of the distinct chunks those manifests reference
    stored   = Σ stored_size (encoded: compressed) of those same chunks

    dedupe savings      = logical - unique   (chunks shared by files and versions)
    compression savings = unique - stored    (zstd on the chunks that compress)

A chunk shared by two repositories counts in both (each would need it alone), so the
registry-wide totals are computed over *distinct* chunks, not summed from the rows.

Everything is an SQL aggregate: the file sizes are read from the manifest bodies by the
database's JSON functions (SQLite's ``json_each``, PostgreSQL's ``jsonb_array_elements``)
and the chunk sums by joining ``manifest_chunks`` to ``chunks``; no Python loop visits a
manifest's chunks, so the page costs a few statements however large the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from wreg_server.db import dialect
from wreg_server.db.models import Chunk, ManifestChunk, ManifestRow, Repository, Tag


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage figures of one repository (``name``) or of the registry (``name`` None)."""

    name: str | None
    manifests: int
    tags: int
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    chunks: int

    @property
    def dedupe_savings(self) -> int:
        return self.logical_bytes - self.unique_bytes

    @property
    def compression_savings(self) -> int:
        return self.unique_bytes - self.stored_bytes

    @property
    def total_savings(self) -> int:
        return self.logical_bytes - self.stored_bytes


# The file sizes in every manifest body, summed per repository, in each backend's JSON.
_LOGICAL_SQL = {
    "sqlite": (
        "SELECT m.repository_id AS repository_id, "
        "COALESCE(SUM(CAST(json_extract(f.value, '$.size') AS INTEGER)), 0) AS logical "
        "FROM manifests AS m, json_each(CAST(m.body AS TEXT), '$.files') AS f "
        "GROUP BY m.repository_id"
    ),
    "postgresql": (
        "SELECT m.repository_id AS repository_id, "
        "COALESCE(SUM((f.value ->> 'size')::bigint), 0) AS logical "
        "FROM manifests AS m CROSS JOIN LATERAL "
        "jsonb_array_elements(convert_from(m.body, 'UTF8')::jsonb -> 'files') AS f(value) "
        "GROUP BY m.repository_id"
    ),
}


def _logical_query(session: AsyncSession) -> TextClause:
    name = session.get_bind().dialect.name
    if name not in _LOGICAL_SQL:
        raise NotImplementedError(f"unsupported database backend {name!r}")
    return text(_LOGICAL_SQL[name])


async def by_repository(session: AsyncSession) -> list[Usage]:
    """Every repository's usage, sorted by name (filter by access at the caller)."""
    names: dict[int, str] = {
        int(repo_id): str(name)
        for repo_id, name in await session.execute(select(Repository.id, Repository.name))
    }
    manifests: dict[int, int] = {
        int(repo_id): int(n)
        for repo_id, n in await session.execute(
            select(ManifestRow.repository_id, func.count()).group_by(ManifestRow.repository_id)
        )
    }
    tag_counts: dict[int, int] = {
        int(repo_id): int(n)
        for repo_id, n in await session.execute(
            select(Tag.repository_id, func.count()).group_by(Tag.repository_id)
        )
    }
    logical = {
        int(r.repository_id): int(r.logical) for r in await session.execute(_logical_query(session))
    }
    edges = (
        select(ManifestRow.repository_id.label("repository_id"), ManifestChunk.chunk_digest)
        .join(ManifestChunk, ManifestChunk.manifest_id == ManifestRow.id)
        .distinct()
        .subquery()
    )
    chunk_sums = {
        int(r.repository_id): (int(r.unique), int(r.stored), int(r.chunks))
        for r in await session.execute(
            select(
                edges.c.repository_id,
                func.coalesce(func.sum(Chunk.size), 0).label("unique"),
                func.coalesce(func.sum(Chunk.stored_size), 0).label("stored"),
                func.count().label("chunks"),
            )
            .join(Chunk, Chunk.digest == edges.c.chunk_digest)
            .group_by(edges.c.repository_id)
        )
    }
    usages = []
    for repo_id, name in names.items():
        unique, stored, chunks = chunk_sums.get(repo_id, (0, 0, 0))
        usages.append(
            Usage(
                name,
                manifests.get(repo_id, 0),
                tag_counts.get(repo_id, 0),
                logical.get(repo_id, 0),
                unique,
                stored,
                chunks,
            )
        )
    return sorted(usages, key=lambda u: u.name or "")


async def totals(session: AsyncSession, usages: list[Usage]) -> Usage:
    """The registry's usage over ``usages``' repositories, chunks counted once each."""
    names = [u.name for u in usages if u.name is not None]
    if not names:
        return Usage(None, 0, 0, 0, 0, 0, 0)
    referenced = (
        select(ManifestChunk.chunk_digest)
        .join(ManifestRow, ManifestRow.id == ManifestChunk.manifest_id)
        .join(Repository, Repository.id == ManifestRow.repository_id)
        .where(dialect.in_values(session, Repository.name, names[: dialect.SET_BATCH]))
        .distinct()
        .subquery()
    )
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(Chunk.size), 0),
                func.coalesce(func.sum(Chunk.stored_size), 0),
                func.count(),
            ).join(referenced, referenced.c.chunk_digest == Chunk.digest)
        )
    ).one()
    return Usage(
        None,
        sum(u.manifests for u in usages),
        sum(u.tags for u in usages),
        sum(u.logical_bytes for u in usages),
        int(row[0]),
        int(row[1]),
        int(row[2]),
    )


@dataclass(frozen=True, slots=True)
class Pushed:
    """When a manifest was committed, and by which token (None: auth off, or older)."""

    created_at: datetime
    pushed_by: str | None


async def pushed(session: AsyncSession, name: str, digest: str) -> Pushed | None:
    """Who committed manifest ``digest`` of repository ``name``, and when (None: unknown)."""
    row = (
        await session.execute(
            select(ManifestRow.created_at, ManifestRow.pushed_by)
            .join(Repository, Repository.id == ManifestRow.repository_id)
            .where(Repository.name == name, ManifestRow.digest == digest)
        )
    ).first()
    return None if row is None else Pushed(row.created_at, row.pushed_by)


async def tag_count(session: AsyncSession, name: str, prefix: str | None = None) -> int:
    """How many tags repository ``name`` has (starting with ``prefix``, if given)."""
    query = (
        select(func.count())
        .select_from(Tag)
        .join(Repository, Repository.id == Tag.repository_id)
        .where(Repository.name == name)
    )
    if prefix:
        query = query.where(Tag.name.startswith(prefix, autoescape=True))
    return int(await session.scalar(query) or 0)
