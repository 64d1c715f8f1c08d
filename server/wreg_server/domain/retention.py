"""Retention policies: a repository keeps its newest checkpoints, older ones go by themselves.

A policy (one per repository, table ``retention_policies``) is ``keep`` N, ``match`` P and
``protect`` Q1 … Qk, all globs on *tag names*, matched with ``fnmatch.fnmatchcase``
(case-sensitive: ``step-*`` does not match ``STEP-1``; ``*`` and ``?`` only, no ``[…]``).
``plan`` reads the repository's tagged manifests and decides each one:

1. *candidates*: manifests carrying at least one tag that matches P. A manifest with no
   tag is never a candidate: retention never touches untagged manifests (delete those by
   digest, or leave them to a person);
2. candidates are ordered newest first by the manifest's ``created_at`` (its first
   commit), ties broken by id (commit order); the first N are *kept*;
3. every older candidate is *kept* if one of its tags matches a protected pattern, or if
   it carries any tag that does not match P (someone tagged it for another reason, e.g.
   ``prod``); otherwise — every tag matches P, none is protected — it is *deleted*.

Deleting a manifest deletes its tags and its chunk edges exactly as ``DELETE
/v1/repositories/{name}/manifests/{digest}`` does (``domain/manifests.remove``); its chunks
then become garbage for GC's mark and sweep, after their grace (``domain/gc.py``).

``apply`` decides and deletes under the repository's lock (``repositories.touch``, the lock
every tag and manifest change takes first), at most ``batch`` manifests per transaction,
re-planning under the lock for each batch: a tag moved or added between two batches is
seen by the next one, so a manifest someone just tagged ``prod`` is never deleted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.errors import ErrorCode, WregError
from wreg.core.reference import validate_name
from wreg_server.db import dialect
from wreg_server.db.models import ManifestChunk, ManifestRow, Repository, RetentionPolicy, Tag
from wreg_server.db.types import utcnow
from wreg_server.domain import repositories

MAX_KEEP: Final = 100_000
"""Most manifests a policy may keep (a plan reads every tagged manifest of the repository)."""
MAX_PATTERN_LENGTH: Final = 128
"""A pattern is at most as long as a tag."""
MAX_PROTECT: Final = 32
"""Most protected patterns per policy."""
APPLY_BATCH: Final = 100
"""Most manifests one ``apply`` transaction deletes (it holds the repository's lock)."""

_PATTERN: Final = re.compile(r"[A-Za-z0-9._*?-]{1,128}")


def _invalid(message: str, **detail: Any) -> WregError:
    return ErrorCode.BODY_INVALID.error(message, detail=detail or None)


def validate_pattern(pattern: str, what: str = "match") -> str:
    """A tag glob: 1-128 characters of a tag (``A-Za-z0-9._-``) or ``*``/``?``."""
    if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
        shown = pattern[:MAX_PATTERN_LENGTH] if isinstance(pattern, str) else pattern
        raise _invalid(
            f"invalid {what} pattern {shown!r}: expected 1-{MAX_PATTERN_LENGTH} characters "
            "of A-Z, a-z, 0-9, '.', '_', '-' and the wildcards '*' and '?'",
            field=what,
        )
    return pattern


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy (``of`` checks every field)."""

    repository: str
    keep: int
    match: str
    protect: tuple[str, ...] = ()
    updated_at: datetime | None = None

    @classmethod
    def of(
        cls, repository: str, keep: int, match: str, protect: list[str] | tuple[str, ...] = ()
    ) -> Policy:
        validate_name(repository)
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
            raise _invalid(
                f"invalid keep {keep!r}: expected an integer from 1 to {MAX_KEEP} "
                "(to stop retention, clear the policy)",
                field="keep",
            )
        validate_pattern(match)
        if len(protect) > MAX_PROTECT:
            raise _invalid(
                f"too many protected patterns ({len(protect)}): at most {MAX_PROTECT}",
                field="protect",
            )
        unique = tuple(dict.fromkeys(validate_pattern(p, "protect") for p in protect))
        return cls(repository, keep, match, unique)

    def matches(self, tag: str) -> bool:
        return fnmatchcase(tag, self.match)

    def protector(self, tag: str) -> str | None:
        """The first protected pattern ``tag`` matches, if any."""
        return next((p for p in self.protect if fnmatchcase(tag, p)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "keep": self.keep,
            "match": self.match,
            "protect": list(self.protect),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy decides for one candidate manifest, and why."""

    id: int
    digest: str
    tags: tuple[str, ...]
    created_at: datetime
    delete: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "tags": list(self.tags),
            "created_at": self.created_at.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Every candidate of one repository, newest first, split into deleted and kept."""

    repository: str
    policy: Policy | None
    delete: tuple[Verdict, ...] = ()
    keep: tuple[Verdict, ...] = ()
    untouched: int = field(default=0)
    """Tagged manifests that are no candidate (no tag matches the policy's pattern)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "policy": self.policy.to_json() if self.policy else None,
            "delete": [v.to_json() for v in self.delete],
            "keep": [v.to_json() for v in self.keep],
            "untouched": self.untouched,
        }


@dataclass(frozen=True, slots=True)
class Tagged:
    """A tagged manifest as ``decide`` sees it."""

    id: int
    digest: str
    created_at: datetime
    tags: tuple[str, ...]


def decide(policy: Policy, manifests: list[Tagged]) -> RetentionPlan:
    """The plan for ``manifests`` (the module docstring's rules; no I/O)."""
    candidates = [m for m in manifests if any(policy.matches(t) for t in m.tags)]
    candidates.sort(key=lambda m: (m.created_at, m.id), reverse=True)
    doomed: list[Verdict] = []
    kept: list[Verdict] = []
    for rank, m in enumerate(candidates):
        tags = tuple(sorted(m.tags))
        if rank < policy.keep:
            kept.append(Verdict(m.id, m.digest, tags, m.created_at, False, f"newest {policy.keep}"))
            continue
        protected = [(t, p) for t in tags if (p := policy.protector(t)) is not None]
        others = [t for t in tags if not policy.matches(t)]
        if protected:
            tag, pattern = protected[0]
            reason = f"protected: {tag} matches {pattern}"
        elif others:
            reason = f"also tagged {', '.join(others)}"
        else:
            doomed.append(
                Verdict(m.id, m.digest, tags, m.created_at, True, "older than the newest")
            )
            continue
        kept.append(Verdict(m.id, m.digest, tags, m.created_at, False, reason))
    return RetentionPlan(
        policy.repository, policy, tuple(doomed), tuple(kept), len(manifests) - len(candidates)
    )


def _policy_of(row: RetentionPolicy) -> Policy:
    return Policy(row.repository, row.keep, row.match, tuple(row.protect.split()), row.updated_at)


async def get(session: AsyncSession, name: str) -> Policy | None:
    """``name``'s policy, or None."""
    # populate_existing: re-read, never the identity map's copy (``apply`` re-plans).
    row = await session.get(RetentionPolicy, name, populate_existing=True)
    return None if row is None else _policy_of(row)


async def list_all(
    session: AsyncSession, *, after: str = "", limit: int | None = None
) -> list[Policy]:
    """Policies by repository name, those after ``after`` (keyset pages of ``limit``)."""
    query = (
        select(RetentionPolicy)
        .where(RetentionPolicy.repository > after)
        .order_by(RetentionPolicy.repository)
        .execution_options(populate_existing=True)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_policy_of(r) for r in (await session.scalars(query)).all()]


async def set_policy(session: AsyncSession, policy: Policy) -> Policy:
    """Create or replace ``policy`` (validated by ``Policy.of``); it applies from the next GC."""
    now = utcnow()
    values = {"keep": policy.keep, "match": policy.match, "protect": " ".join(policy.protect)}
    stmt = dialect.insert(session, RetentionPolicy).values(
        repository=policy.repository, updated_at=now, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["repository"], set_={**values, "updated_at": now}
    )
    await session.execute(stmt)
    await session.commit()
    return Policy(policy.repository, policy.keep, policy.match, policy.protect, now)


async def clear(session: AsyncSession, name: str) -> bool:
    """Remove ``name``'s policy; whether there was one."""
    result = await session.execute(
        delete(RetentionPolicy)
        .where(RetentionPolicy.repository == name)
        .returning(RetentionPolicy.repository)
    )
    removed = result.first() is not None
    await session.commit()
    return removed


async def _tagged(session: AsyncSession, repo_id: int) -> list[Tagged]:
    rows = await session.execute(
        select(ManifestRow.id, ManifestRow.digest, ManifestRow.created_at, Tag.name)
        .join(Tag, Tag.manifest_id == ManifestRow.id)
        .where(ManifestRow.repository_id == repo_id)
    )
    found: dict[int, tuple[str, datetime]] = {}
    tags: defaultdict[int, list[str]] = defaultdict(list)
    for manifest_id, digest, created_at, tag in rows:
        found[manifest_id] = (digest, created_at)
        tags[manifest_id].append(tag)
    return [Tagged(i, d, c, tuple(tags[i])) for i, (d, c) in found.items()]


async def _repo_id(session: AsyncSession, name: str) -> int | None:
    return await session.scalar(select(Repository.id).where(Repository.name == name))


async def plan(session: AsyncSession, name: str) -> RetentionPlan:
    """What ``apply`` would delete from ``name`` now, and what it keeps and why (reads only).

    No policy, or no repository yet: an empty plan (``policy`` None in the first case).
    """
    policy = await get(session, name)
    if policy is None:
        return RetentionPlan(name, None)
    repo_id = await _repo_id(session, name)
    if repo_id is None:
        return RetentionPlan(name, policy)
    return decide(policy, await _tagged(session, repo_id))


async def apply(session: AsyncSession, name: str, *, batch: int = APPLY_BATCH) -> list[Verdict]:
    """Delete what ``name``'s policy condemns; returns the deleted manifests (oldest last).

    Each transaction locks the repository, re-reads policy and tags, and deletes at most
    ``batch`` manifests with their tags and chunk edges, as ``manifests.remove`` does.
    """
    deleted: list[Verdict] = []
    while True:
        repo_id = await _repo_id(session, name)
        if repo_id is None:
            await session.rollback()
            return deleted
        await repositories.touch(session, repo_id)  # the lock, before reading tags
        policy = await get(session, name)
        if policy is None:
            await session.rollback()
            return deleted
        doomed = decide(policy, await _tagged(session, repo_id)).delete
        if not doomed:
            await session.rollback()
            return deleted
        now = list(doomed[:batch])
        ids = [v.id for v in now]
        await session.execute(delete(Tag).where(Tag.manifest_id.in_(ids)))
        await session.execute(delete(ManifestChunk).where(ManifestChunk.manifest_id.in_(ids)))
        await session.execute(delete(ManifestRow).where(ManifestRow.id.in_(ids)))
        await session.commit()
        deleted += now
        if len(doomed) <= batch:
            return deleted
