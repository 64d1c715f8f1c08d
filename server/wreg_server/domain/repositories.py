"""Repositories: created by their first manifest commit, listed with their tags."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.errors import NotFound
from wreg.core.reference import validate_name
from wreg_server.db import dialect
from wreg_server.db.models import Repository, Tag
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
    validate_name(name)
    repo_id = await session.scalar(select(Repository.id).where(Repository.name == name))
    if repo_id is None:
        raise NotFound(
            f"repository {name!r} is unknown", code="NAME_UNKNOWN", detail={"name": name}
        )
    return repo_id


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
