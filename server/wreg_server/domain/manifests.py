"""Manifests: commit (verify, check chunks, record, optionally tag) and resolve.

A manifest is accepted only when its body is exactly the canonical JSON of what it
parses to and hashes to the digest in the URL, so the digest a client computed locally
is the one every other client will verify. Committing is idempotent: the same manifest
again only (re)moves the tag.
"""

from __future__ import annotations

from typing import cast

from anyio import to_thread
from sqlalchemy import Table, delete, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import PREFIX, digest_bytes
from wreg.core.errors import ErrorCode
from wreg.core.manifest import Manifest
from wreg_server.db import dialect
from wreg_server.db.models import ManifestChunk, ManifestRow, Repository, Tag
from wreg_server.db.types import utcnow
from wreg_server.domain import access, repositories, tags
from wreg_server.domain.access import Visibility
from wreg_server.domain.views import ManifestBody


def parse_verified(digest: str, body: bytes) -> Manifest:
    """Parse ``body``, insisting it hashes to ``digest`` and is canonical (CPU-bound)."""
    actual = digest_bytes(body)
    if actual != digest:
        raise ErrorCode.DIGEST_MISMATCH.error(
            f"manifest body does not match its digest: expected {digest}, got {actual}",
            detail={"expected": digest, "actual": actual},
        )
    manifest = Manifest.from_json_bytes(body)
    if manifest.to_json_bytes() != body:
        raise ErrorCode.MANIFEST_INVALID.error(
            "manifest body is not canonical JSON (sorted keys, no whitespace, UTF-8)",
        )
    return manifest


async def commit(
    session: AsyncSession,
    name: str,
    digest: str,
    body: bytes,
    tag: str | None = None,
    *,
    visibility: Visibility,
    pushed_by: str | None = None,
) -> Manifest | None:
    """Record manifest ``digest`` in repository ``name`` (creating it); the manifest if
    it is new, else None.

    Every chunk it names must be stored and *usable* by this push (``domain/access.py``:
    reachable from a repository the caller may pull, or uploaded through ``name``);
    any other is reported missing, exactly like a chunk that is not stored.

    Everything — repository, manifest, its chunk edges, the tag — lands in one
    transaction, so a failed commit leaves nothing behind. The repository row is locked
    first (``ensure``), like every other tag or manifest change, so a concurrent delete of
    this manifest or move of this tag runs wholly before or after this commit.
    """
    manifest = await to_thread.run_sync(parse_verified, digest, body)

    repo_id = await repositories.ensure(session, name)
    manifest_id = await _find(session, name, digest)
    created = manifest_id is None
    if manifest_id is None:
        await _check_chunks(session, visibility, name, manifest)
        manifest_id = await _insert(session, repo_id, digest, body, manifest, pushed_by)
    if tag is not None:
        await tags.upsert(session, repo_id, tag, manifest_id)
    await session.commit()
    return manifest if created else None


async def resolve(session: AsyncSession, name: str, reference: str) -> ManifestBody:
    """The manifest ``reference`` (a tag or a digest) names in repository ``name``."""
    repo_id = await repositories.require(session, name)
    query = select(
        ManifestRow.digest, ManifestRow.body, ManifestRow.created_at, ManifestRow.pushed_by
    ).where(ManifestRow.repository_id == repo_id)
    if reference.startswith(PREFIX):
        row = (await session.execute(query.where(ManifestRow.digest == reference))).first()
        if row is None:
            raise ErrorCode.MANIFEST_UNKNOWN.error(
                f"manifest {reference} is unknown in {name!r}",
                detail={"name": name, "digest": reference},
            )
    else:
        query = query.join(Tag, Tag.manifest_id == ManifestRow.id).where(
            Tag.repository_id == repo_id, Tag.name == reference
        )
        row = (await session.execute(query)).first()
        if row is None:
            raise tags.unknown(name, reference)
    return ManifestBody(name, row.digest, row.body, row.created_at, row.pushed_by)


async def find(
    session: AsyncSession, name: str, *, prefix: str | None = None, tag: str | None = None
) -> list[ManifestBody]:
    """The manifests of ``name`` whose digest starts with ``prefix`` (at most two: one
    more than a unique prefix finds), or the one ``tag`` points at (none if neither
    matches); raises ``NotFound`` (NAME_UNKNOWN) for an unknown repository."""
    repo_id = await repositories.require(session, name)
    query = select(ManifestRow.digest, ManifestRow.body, ManifestRow.created_at).where(
        ManifestRow.repository_id == repo_id
    )
    if prefix is not None:
        query = query.where(ManifestRow.digest.startswith(prefix, autoescape=True)).limit(2)
    elif tag is not None:
        query = query.join(Tag, Tag.manifest_id == ManifestRow.id).where(
            Tag.repository_id == repo_id, Tag.name == tag
        )
    else:
        raise ValueError("find needs a prefix or a tag")
    rows = (await session.execute(query)).all()
    return [ManifestBody(name, r.digest, r.body, r.created_at) for r in rows]


async def remove(session: AsyncSession, name: str, digest: str) -> list[str]:
    """Delete manifest ``digest`` of ``name`` and every tag pointing at it; returns the tags.

    Its chunk edges go with it, so chunks only it referenced become garbage for the next
    GC run (after their grace period, counted from their last upload or query).
    """
    repo_id = await repositories.require(session, name)
    manifest_id = await repositories.manifest_id(session, repo_id, digest)
    await repositories.touch(session, repo_id)  # repository row before tag rows (see touch)
    removed = await session.scalars(
        delete(Tag).where(Tag.manifest_id == manifest_id).returning(Tag.name)
    )
    tag_names = sorted(removed)
    await session.execute(delete(ManifestChunk).where(ManifestChunk.manifest_id == manifest_id))
    await session.execute(delete(ManifestRow).where(ManifestRow.id == manifest_id))
    await session.commit()
    return tag_names


async def _find(session: AsyncSession, name: str, digest: str) -> int | None:
    return await session.scalar(
        select(ManifestRow.id)
        .join(Repository, Repository.id == ManifestRow.repository_id)
        .where(Repository.name == name, ManifestRow.digest == digest)
    )


async def _check_chunks(
    session: AsyncSession, visibility: Visibility, name: str, manifest: Manifest
) -> None:
    """Every chunk must be stored and usable, with the raw size the manifest claims."""
    wanted = {c.digest: c.size for f in manifest.files for c in f.chunks}
    stored = await access.usable(session, visibility, name, wanted)
    missing = [d for d in wanted if d not in stored]
    if missing:
        raise ErrorCode.MANIFEST_CHUNKS_MISSING.error(
            f"manifest references {len(missing)} chunk(s) the registry lacks",
            detail={"missing": missing},
        )
    wrong = {d: {"manifest": s, "stored": stored[d]} for d, s in wanted.items() if stored[d] != s}
    if wrong:
        raise ErrorCode.MANIFEST_INVALID.error(
            "manifest gives chunk sizes that differ from the stored chunks",
            detail={"sizes": wrong},
        )


async def _insert(
    session: AsyncSession,
    repo_id: int,
    digest: str,
    body: bytes,
    manifest: Manifest,
    pushed_by: str | None,
) -> int:
    stmt = dialect.insert(session, ManifestRow).values(
        repository_id=repo_id, digest=digest, body=body, created_at=utcnow(), pushed_by=pushed_by
    )
    # A concurrent commit of the same manifest wins harmlessly: same bytes, same edges.
    stmt = stmt.on_conflict_do_nothing(index_elements=["repository_id", "digest"])
    manifest_id = await session.scalar(stmt.returning(ManifestRow.id))
    if manifest_id is not None:
        # The edges: INSERT ... SELECT from the digest set sent as one parameter
        # (``dialect.values_of``), a statement per SET_BATCH, no Python work per row.
        digests = sorted(manifest.chunk_digests())
        table = cast(Table, ManifestChunk.__table__)
        for at in range(0, len(digests), dialect.SET_BATCH):
            wanted = dialect.values_of(session, digests[at : at + dialect.SET_BATCH]).subquery()
            rows = select(literal(int(manifest_id)), wanted.c.value)
            await session.execute(insert(table).from_select(["manifest_id", "chunk_digest"], rows))
        return int(manifest_id)
    return await repositories.manifest_id(session, repo_id, digest)
