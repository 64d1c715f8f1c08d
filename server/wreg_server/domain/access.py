"""Which chunks a repository may see: the chunk namespace (README, "Security model").

Storage is deduplicated globally — one stored copy per digest — but visibility is not.
Under ``WREG_CHUNK_NAMESPACE=repository`` (the default):

* a chunk is *readable* through repository R (``GET``/``HEAD`` of
  ``/v1/repositories/R/chunks/{digest}``) only if a manifest of R references it;
* a chunk is *usable* by a push to R — reported present by the missing-chunks query,
  accepted in a manifest commit — only if a repository the pusher may pull references
  it, or its bytes were uploaded through R (``chunk_claims``: proof of possession).

Any other chunk is answered exactly like one that does not exist, so a token learns
nothing about chunks outside the repositories it can read, and cannot claim another
team's chunks in a manifest of its own without sending their bytes. Under ``global``
every live chunk is readable and usable (single-tenant registries).

Reads are the hot path (a pull's thousands of chunk GETs), so each process keeps, per
repository, the set of chunk digests its manifests reference (``RepositoryChunks``),
loaded with one query and trusted for ``ttl`` seconds. A digest not in the set costs one
indexed lookup (a commit on another replica may just have added it) and joins the set
when found. A manifest deleted on another replica stops granting reads here within
``ttl`` (the same bound as a token revocation); commits and deletes through this
process update the set at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Literal, TypeVar

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import validate_digest
from wreg_server.db import dialect
from wreg_server.db.models import Chunk, ChunkClaim, ManifestChunk, ManifestRow, Repository
from wreg_server.domain import chunks
from wreg_server.metrics import current as metrics

Namespace = Literal["repository", "global"]

# Bind parameters per IN (...): well under SQLite's and PostgreSQL's limits. Digest sets
# go as one parameter each (``dialect.in_values``), ``dialect.SET_BATCH`` at a time.
_BATCH: Final = 500


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a request may see of the chunk store: the namespace, and which repositories
    the caller may pull (``None``: every one — auth off, or a ``pull:*`` scope)."""

    namespace: Namespace
    may_pull: Callable[[str], bool] | None = None

    @property
    def is_global(self) -> bool:
        return self.namespace == "global"


_T = TypeVar("_T")


def _batched(items: Iterable[_T], n: int = _BATCH) -> Iterable[list[_T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, n)):
        yield batch


def _referenced_in(name: str) -> Select[Any]:
    return (
        select(ManifestChunk.chunk_digest)
        .join(ManifestRow, ManifestRow.id == ManifestChunk.manifest_id)
        .join(Repository, Repository.id == ManifestRow.repository_id)
        .where(Repository.name == name)
    )


class RepositoryChunks:
    """Per process: the chunk digests each recently read repository's manifests
    reference (module docstring). Bounded: at most ``max_digests`` digests in all, least
    recently used repositories dropped first; a repository larger than that is not kept
    and every read of it costs one indexed lookup."""

    def __init__(self, ttl: float, max_digests: int = 1 << 18) -> None:
        self.ttl = ttl
        self.max_digests = max_digests
        self._sets: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()
        self._size = 0

    async def contains(self, session: AsyncSession, name: str, digest: str) -> bool:
        """Whether a manifest of repository ``name`` references chunk ``digest``."""
        entry = self._fresh(name)
        if entry is not None:
            self._sets.move_to_end(name)
            if digest in entry[1]:
                return True
        elif self.ttl > 0 and await self._load(session, name):
            found = self._sets.get(name)
            return found is not None and digest in found[1]
        hit = await session.scalar(
            _referenced_in(name).where(ManifestChunk.chunk_digest == digest).limit(1)
        )
        if hit is not None:
            self.add(name, [digest])
        return hit is not None

    def holds(self, name: str, digest: str) -> bool:
        """Whether ``name``'s loaded, unexpired set holds ``digest``, without a query (the
        download hot path's check, ``api/hotpath.py``); False means: ask ``contains``."""
        entry = self._fresh(name)
        return entry is not None and digest in entry[1]

    def _fresh(self, name: str) -> tuple[float, set[str]] | None:
        """``name``'s set if loaded and unexpired; an expired one is dropped."""
        entry = self._sets.get(name)
        if entry is not None and entry[0] < time.monotonic():
            self.forget(name)
            return None
        return entry

    async def lacking(self, session: AsyncSession, name: str, digests: list[str]) -> list[str]:
        """Those of ``digests`` no manifest of ``name`` references (``contains`` for a
        batch: one set lookup each, then one query for the rest, ``dialect.values_of``)."""
        entry = self._fresh(name)
        if entry is not None:
            self._sets.move_to_end(name)
        elif self.ttl > 0 and await self._load(session, name):
            loaded = self._sets.get(name)
            known = loaded[1] if loaded is not None else set()
            return [d for d in digests if d not in known]
        rest = [d for d in dict.fromkeys(digests) if entry is None or d not in entry[1]]
        found: set[str] = set()
        for batch in _batched(rest, dialect.SET_BATCH):
            wanted = dialect.in_values(session, ManifestChunk.chunk_digest, batch)
            query = _referenced_in(name).where(wanted)
            found.update(await session.scalars(query.distinct()))
        if found:
            self.add(name, found)
        return [d for d in digests if (entry is None or d not in entry[1]) and d not in found]

    async def _load(self, session: AsyncSession, name: str) -> bool:
        """Load ``name``'s set; False when it is too large to keep."""
        rows = await session.scalars(_referenced_in(name).distinct().limit(self.max_digests + 1))
        digests: set[str] = {str(d) for d in rows}
        if len(digests) > self.max_digests:
            return False
        self._put(name, digests)
        return True

    def _put(self, name: str, digests: set[str]) -> None:
        self.forget(name)
        while self._sets and self._size + len(digests) > self.max_digests:
            _name, (_expires, dropped) = self._sets.popitem(last=False)
            self._size -= len(dropped)
        self._sets[name] = (time.monotonic() + self.ttl, digests)
        self._size += len(digests)

    def add(self, name: str, digests: Iterable[str]) -> None:
        """Digests a manifest of ``name`` now references (a commit through this process)."""
        entry = self._sets.get(name)
        if entry is None:
            return  # loaded, complete, on its next read
        before = len(entry[1])
        entry[1].update(digests)
        self._size += len(entry[1]) - before
        if self._size > self.max_digests:
            self.forget(name)

    def forget(self, name: str) -> None:
        """Drop ``name``'s set (a manifest of it was deleted, or the set expired)."""
        entry = self._sets.pop(name, None)
        if entry is not None:
            self._size -= len(entry[1])

    def clear(self) -> None:
        self._sets.clear()
        self._size = 0


async def readable(
    session: AsyncSession,
    sets: RepositoryChunks,
    visibility: Visibility,
    name: str,
    digest: str,
) -> bool:
    """Whether chunk ``digest`` may be read through repository ``name`` (whether it is
    stored at all is the caller's next question, answered the same way when not)."""
    return visibility.is_global or await sets.contains(session, name, digest)


async def unreadable(
    session: AsyncSession,
    sets: RepositoryChunks,
    visibility: Visibility,
    name: str,
    digests: list[str],
) -> list[str]:
    """Those of ``digests`` that may not be read through ``name`` (``readable`` for a
    batch, in a few queries however many there are)."""
    if visibility.is_global:
        return []
    return await sets.lacking(session, name, digests)


async def usable(
    session: AsyncSession, visibility: Visibility, name: str, digests: Iterable[str]
) -> dict[str, int]:
    """Raw sizes of the live chunks among ``digests`` a push to ``name`` may reference."""
    if visibility.is_global:
        return await chunks.sizes_of(session, digests)
    live, proven = await _live_and_claimed(session, name, digests)
    rest = [d for d in live if d not in proven]
    if rest:
        proven |= await _reachable(session, rest, visibility.may_pull)
    return {d: size for d, size in live.items() if d in proven}


async def _live_and_claimed(
    session: AsyncSession, name: str, digests: Iterable[str]
) -> tuple[dict[str, int], set[str]]:
    """``chunks.sizes_of`` and ``_claimed`` in one query (per ``dialect.SET_BATCH``)."""
    live: dict[str, int] = {}
    claimed: set[str] = set()
    for batch in _batched(digests, dialect.SET_BATCH):
        query = (
            select(Chunk.digest, Chunk.size, ChunkClaim.chunk_digest)
            .outerjoin(
                ChunkClaim,
                and_(ChunkClaim.chunk_digest == Chunk.digest, ChunkClaim.repository == name),
            )
            .where(
                dialect.in_values(session, Chunk.digest, batch), Chunk.gc_pending_since.is_(None)
            )
        )
        for digest, size, claim in await session.execute(query):
            live[digest] = size
            if claim is not None:
                claimed.add(digest)
    return live, claimed


async def _reachable(
    session: AsyncSession, digests: list[str], may_pull: Callable[[str], bool] | None
) -> set[str]:
    """Those of ``digests`` some manifest of a repository the caller may pull references."""
    found: set[str] = set()
    if may_pull is None:
        for batch in _batched(digests, dialect.SET_BATCH):
            wanted = dialect.in_values(session, ManifestChunk.chunk_digest, batch)
            query = select(ManifestChunk.chunk_digest).where(wanted)
            found.update(await session.scalars(query.distinct()))
        return found
    repos = await session.execute(select(Repository.id, Repository.name))
    ids = [int(repo_id) for repo_id, repo in repos if may_pull(repo)]
    for id_batch in _batched(ids):
        for batch in _batched((d for d in digests if d not in found), dialect.SET_BATCH):
            query = (
                select(ManifestChunk.chunk_digest)
                .join(ManifestRow, ManifestRow.id == ManifestChunk.manifest_id)
                .where(
                    dialect.in_values(session, ManifestChunk.chunk_digest, batch),
                    ManifestRow.repository_id.in_(id_batch),
                )
            )
            found.update(await session.scalars(query.distinct()))
    return found


async def missing(
    session: AsyncSession, visibility: Visibility, name: str, digests: Iterable[str]
) -> list[str]:
    """The digests a push to ``name`` must upload, in request order, each once: those
    the registry lacks and those the caller cannot show it may use.

    The usable chunks are refreshed and the refresh committed before they are looked up
    again and the answer leaves, so the collector cannot condemn a chunk this query
    reports present (``domain/chunks.py``, ``domain/gc.py``).
    """
    unique = list(dict.fromkeys(validate_digest(d) for d in digests))
    present = await usable(session, visibility, name, unique)
    await chunks.refresh(session, present)
    await session.commit()
    still = await chunks.sizes_of(session, present)
    absent = [d for d in unique if d not in still]
    metrics().missing_query(len(unique), len(absent), sum(still.values()))
    return absent
