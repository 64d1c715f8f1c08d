"""Tags: mutable names pointing at manifests of the same repository."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import validate_digest
from wreg.core.errors import ErrorCode, WregError
from wreg_server.db import dialect
from wreg_server.db.models import ManifestRow, Tag
from wreg_server.db.types import utcnow
from wreg_server.domain import repositories
from wreg_server.domain.views import TagInfo


def unknown(name: str, tag: str) -> WregError:
    return ErrorCode.TAG_UNKNOWN.error(
        f"tag {tag!r} is unknown in {name!r}", detail={"name": name, "tag": tag}
    )


@dataclass(frozen=True, slots=True)
class Precondition:
    """What the tag must point at for a change to apply (HTTP ``If-Match``/``If-None-Match``).

    ``if_match``: the tag's current digest must be one of these (``"*"``: the tag must
    exist). ``if_none_match``: it must be none of these (``"*"``: the tag must not exist).
    ``None`` leaves that side unchecked.
    """

    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None

    def holds(self, current: str | None) -> bool:
        if self.if_match is not None and not _matches(current, self.if_match):
            return False
        return self.if_none_match is None or not _matches(current, self.if_none_match)


def _matches(current: str | None, etags: tuple[str, ...]) -> bool:
    return current is not None and ("*" in etags or current in etags)


def conflict(name: str, tag: str, current: str | None, precondition: Precondition) -> WregError:
    where = f"points at {current}" if current is not None else "does not exist"
    return ErrorCode.TAG_CONFLICT.error(
        f"tag {tag!r} of {name!r} {where}, which the request's precondition excludes",
        detail={
            "name": name,
            "tag": tag,
            "current": current,
            "if_match": list(precondition.if_match) if precondition.if_match else None,
            "if_none_match": (
                list(precondition.if_none_match) if precondition.if_none_match else None
            ),
        },
    )


async def upsert(session: AsyncSession, repo_id: int, tag: str, manifest_id: int) -> datetime:
    """Point ``tag`` at ``manifest_id`` (create or move); the caller commits.

    Last writer wins: ``INSERT … ON CONFLICT DO UPDATE`` is atomic on both backends.
    Returns the tag's new ``updated_at``.
    """
    now = utcnow()
    stmt = dialect.insert(session, Tag).values(
        repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["repository_id", "name"],
        set_={"manifest_id": manifest_id, "updated_at": now},
    )
    await session.execute(stmt)
    return now


async def _current(session: AsyncSession, repo_id: int, tag: str) -> str | None:
    """The digest ``tag`` points at now, or None."""
    return await session.scalar(
        select(ManifestRow.digest)
        .join(Tag, Tag.manifest_id == ManifestRow.id)
        .where(Tag.repository_id == repo_id, Tag.name == tag)
    )


async def put(
    session: AsyncSession,
    name: str,
    tag: str,
    digest: str,
    precondition: Precondition | None = None,
) -> TagInfo:
    """Point ``name@tag`` at manifest ``digest``, which must already be in ``name``.

    Without a precondition the last writer wins. With one, the check and the move happen
    under the repository's lock (``repositories.touch``), so of several clients moving
    the tag from the same digest exactly one succeeds; the others get ``TAG_CONFLICT``.
    """
    validate_digest(digest)  # from the request body; name and tag arrive validated
    repo_id = await repositories.require(session, name)
    await repositories.touch(session, repo_id)  # lock before reading what the tag is
    manifest_id = await repositories.manifest_id(session, repo_id, digest)
    if precondition is not None:
        current = await _current(session, repo_id, tag)
        if not precondition.holds(current):
            raise conflict(name, tag, current, precondition)
    updated_at = await upsert(session, repo_id, tag, manifest_id)
    await session.commit()
    return TagInfo(name, tag, digest, updated_at)


async def get(session: AsyncSession, name: str, tag: str) -> TagInfo:
    repo_id = await repositories.require(session, name)
    row = (
        await session.execute(
            select(ManifestRow.digest, Tag.updated_at)
            .join(ManifestRow, ManifestRow.id == Tag.manifest_id)
            .where(Tag.repository_id == repo_id, Tag.name == tag)
        )
    ).first()
    if row is None:
        raise unknown(name, tag)
    return TagInfo(name, tag, row.digest, row.updated_at)


async def remove(
    session: AsyncSession, name: str, tag: str, precondition: Precondition | None = None
) -> None:
    """Delete a tag (its manifest stays, reachable by digest until GC)."""
    repo_id = await repositories.require(session, name)
    await repositories.touch(session, repo_id)  # lock order: repository, then tag
    if precondition is not None:
        current = await _current(session, repo_id, tag)
        if current is not None and not precondition.holds(current):
            raise conflict(name, tag, current, precondition)
    result = await session.execute(
        delete(Tag).where(Tag.repository_id == repo_id, Tag.name == tag).returning(Tag.id)
    )
    if result.first() is None:
        raise unknown(name, tag)
    await session.commit()


async def list_for(session: AsyncSession, name: str) -> list[TagInfo]:
    """Every tag of repository ``name``, sorted by tag."""
    repo_id = await repositories.require(session, name)
    rows = await session.execute(
        select(Tag.name, ManifestRow.digest, Tag.updated_at)
        .join(ManifestRow, ManifestRow.id == Tag.manifest_id)
        .where(Tag.repository_id == repo_id)
        .order_by(Tag.name)
    )
    return [TagInfo(name, tag, digest, updated_at) for tag, digest, updated_at in rows]


async def page(
    session: AsyncSession,
    name: str,
    *,
    after: str | None = None,
    prefix: str | None = None,
    limit: int = 100,
) -> tuple[list[TagInfo], bool]:
    """One page of ``name``'s tags, sorted by tag: at most ``limit`` (1..1000) tags after
    ``after`` (keyset: the last tag of the previous page), optionally only those starting
    with ``prefix``; and whether more follow. Served by the ``(repository_id, name)``
    unique index, so a page costs the same on the first page as on the last."""
    limit = max(1, min(limit, 1000))
    repo_id = await repositories.require(session, name)
    query = (
        select(Tag.name, ManifestRow.digest, Tag.updated_at)
        .join(ManifestRow, ManifestRow.id == Tag.manifest_id)
        .where(Tag.repository_id == repo_id)
    )
    if prefix:
        query = query.where(Tag.name.startswith(prefix, autoescape=True))
    if after is not None:
        query = query.where(Tag.name > after)
    rows = (await session.execute(query.order_by(Tag.name).limit(limit + 1))).all()
    found = [TagInfo(name, r.name, r.digest, r.updated_at) for r in rows[:limit]]
    return found, len(rows) > limit
