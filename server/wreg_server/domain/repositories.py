"""Repositories: created by their first manifest commit, listed with their tags; and the
ids that tag and manifest changes start from (``require``, ``manifest_id``), here so that
``manifests`` and ``tags`` both build on this module instead of on each other."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.errors import ErrorCode
from wreg_server.db import dialect
from wreg_server.db.models import ManifestRow, Repository, Tag
from wreg_server.db.types import utcnow
from wreg_server.domain.views import RepositoryInfo


async def ensure(session: AsyncSession, name: str) -> int:
    """Id of repository ``name``, creating it if needed; marks it updated now."""
    now = utcnow()
    stmt = dialect.insert(session, Repository).values(name=name, created_at=now, updated_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"updated_at": now})
    repo_id = (await session.execute(stmt.returning(Repository.id))).scalar_one()
    return int(repo_id)


async def require(session: AsyncSession, name: str) -> int:
    """Id of an existing repository; raises ``NotFound`` (NAME_UNKNOWN)."""
    repo_id = await session.scalar(select(Repository.id).where(Repository.name == name))
    if repo_id is None:
        raise ErrorCode.NAME_UNKNOWN.error(f"repository {name!r} is unknown", detail={"name": name})
    return repo_id


async def manifest_id(session: AsyncSession, repo_id: int, digest: str) -> int:
    """Id of manifest ``digest`` in the repository; raises ``NotFound`` (MANIFEST_UNKNOWN)."""
    found = await session.scalar(
        select(ManifestRow.id).where(
            ManifestRow.repository_id == repo_id, ManifestRow.digest == digest
        )
    )
    if found is None:
        raise ErrorCode.MANIFEST_UNKNOWN.error(
            f"manifest {digest} is unknown in this repository",
            detail={"digest": digest},
        )
    return found


async def touch(session: AsyncSession, repo_id: int) -> None:
    """Mark the repository updated now, holding its row lock until the transaction ends.

    The ``UPDATE`` runs at once (not at flush), so calling this *before* changing tags
    makes tag changes in one repository take their locks in one order — repository row,
    then tag rows, as a manifest commit does through ``ensure`` — and so serialize instead
    of deadlocking: a row lock on PostgreSQL, the database write lock on SQLite.
    """
    await session.execute(
        update(Repository)
        .where(Repository.id == repo_id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def list_all(session: AsyncSession) -> list[RepositoryInfo]:
    """Every repository, by name, with its tag names sorted."""
    repos = (await session.execute(select(Repository).order_by(Repository.name))).scalars().all()
    tags: defaultdict[int, list[str]] = defaultdict(list)
    for repo_id, tag in await session.execute(
        select(Tag.repository_id, Tag.name).order_by(Tag.name)
    ):
        tags[repo_id].append(tag)
    return [RepositoryInfo(r.name, tuple(tags[r.id]), r.updated_at) for r in repos]
