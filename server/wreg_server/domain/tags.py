"""Tags: mutable names pointing at manifests of the same repository."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import validate_digest
from wreg.core.errors import NotFound
from wreg.core.reference import validate_name, validate_tag
from wreg_server.db import dialect
from wreg_server.db.models import Manifest, Tag
from wreg_server.db.types import utcnow
from wreg_server.domain import repositories
from wreg_server.domain.views import TagInfo


def unknown(name: str, tag: str) -> NotFound:
    return NotFound(
        f"tag {tag!r} is unknown in {name!r}", code="TAG_UNKNOWN", detail={"name": name, "tag": tag}
    )


async def upsert(session: AsyncSession, repo_id: int, tag: str, manifest_id: int) -> None:
    """Point ``tag`` at ``manifest_id`` (create or move); the caller commits."""
    now = utcnow()
    stmt = dialect.insert(session, Tag).values(
        repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["repository_id", "name"],
        set_={"manifest_id": manifest_id, "updated_at": now},
    )
    await session.execute(stmt)


async def put(session: AsyncSession, name: str, tag: str, digest: str) -> TagInfo:
    """Point ``name@tag`` at manifest ``digest``, which must already be in ``name``."""
    from wreg_server.domain.manifests import find_id  # manifests imports this module

    validate_tag(tag)
    validate_digest(digest)
    repo_id = await repositories.require(session, name)
    manifest_id = await find_id(session, repo_id, digest)
    await upsert(session, repo_id, tag, manifest_id)
    await repositories.touch(session, repo_id)
    await session.commit()
    return await get(session, name, tag)


async def get(session: AsyncSession, name: str, tag: str) -> TagInfo:
    validate_name(name)
    validate_tag(tag)
    repo_id = await repositories.require(session, name)
    row = (
        await session.execute(
            select(Manifest.digest, Tag.updated_at)
            .join(Manifest, Manifest.id == Tag.manifest_id)
            .where(Tag.repository_id == repo_id, Tag.name == tag)
        )
    ).first()
    if row is None:
        raise unknown(name, tag)
    return TagInfo(name, tag, row.digest, row.updated_at)


async def remove(session: AsyncSession, name: str, tag: str) -> None:
    """Delete a tag (its manifest stays, reachable by digest until GC)."""
    validate_tag(tag)
    repo_id = await repositories.require(session, name)
    result = await session.execute(
        delete(Tag).where(Tag.repository_id == repo_id, Tag.name == tag).returning(Tag.id)
    )
    if result.first() is None:
        raise unknown(name, tag)
    await repositories.touch(session, repo_id)
    await session.commit()


async def list_for(session: AsyncSession, name: str) -> list[TagInfo]:
    """Every tag of repository ``name``, sorted by tag."""
    repo_id = await repositories.require(session, name)
    rows = await session.execute(
        select(Tag.name, Manifest.digest, Tag.updated_at)
        .join(Manifest, Manifest.id == Tag.manifest_id)
        .where(Tag.repository_id == repo_id)
        .order_by(Tag.name)
    )
    return [TagInfo(name, tag, digest, updated_at) for tag, digest, updated_at in rows]
