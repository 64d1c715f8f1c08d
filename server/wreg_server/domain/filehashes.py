"""File sha256s: computed once per file identity, after its commit, never per request.

Hugging Face clients take a 64-hex ETag to be a sha256 (``hf/``). wreg files are named by
blake3 identities, so the sha256 is computed separately, by the server, from the
verified chunks (``domain/files.py``): a committed manifest's new files are queued at
commit (``FileHasher.schedule``), hashed in the background by at most ``WORKERS`` tasks,
and recorded in ``file_hashes`` for every later request and every replica. Bytes the
server receives whole (mirror, HF uploads) are hashed on arrival instead (``record``).

A request that finds a file not yet hashed (just pushed, or committed by a replica that
restarted before hashing it) asks the hasher for it and waits at most a few seconds
(``wait``), so a client's first look right after a push still sees the sha256 of a
model-sized file; past that it is answered without one (``hf/`` says how), and the
hash lands shortly after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wreg.core.manifest import FileEntry
from wreg_server.db import dialect
from wreg_server.db.models import FileHash
from wreg_server.db.types import utcnow
from wreg_server.domain.files import FileUnreadable, sha256_of
from wreg_server.objectstore import ObjectStore

log = logging.getLogger(__name__)

WORKERS: Final = 2
"""Files hashed at once (each a chunk stream through a worker thread)."""
_BATCH: Final = 500


async def known(session: AsyncSession, identities: Iterable[str]) -> dict[str, str]:
    """identity → sha256 for those of ``identities`` already hashed."""
    wanted = list(dict.fromkeys(identities))
    found: dict[str, str] = {}
    for at in range(0, len(wanted), _BATCH):
        rows = await session.execute(
            select(FileHash.identity, FileHash.sha256).where(
                FileHash.identity.in_(wanted[at : at + _BATCH])
            )
        )
        found.update({row.identity: row.sha256 for row in rows})
    return found


async def record(session: AsyncSession, identity: str, sha256: str) -> None:
    """Record a sha256 the server computed itself (idempotent; commits)."""
    stmt = dialect.insert(session, FileHash).values(
        identity=identity, sha256=sha256, created_at=utcnow()
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["identity"]))
    await session.commit()


class FileHasher:
    """The background hashing of committed files (module docstring), one per app."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: ObjectStore) -> None:
        self._sessions = sessions
        self._store = store
        self._slots = asyncio.Semaphore(WORKERS)
        self._jobs: dict[str, asyncio.Task[str | None]] = {}

    def schedule(self, files: Iterable[FileEntry]) -> None:
        """Hash each of ``files`` not yet hashed or being hashed (returns at once)."""
        for entry in files:
            self._job(entry)

    async def wait(self, entry: FileEntry, seconds: float) -> str | None:
        """The sha256 of ``entry`` within ``seconds``, else None (the job goes on)."""
        job = self._job(entry)
        try:
            return await asyncio.wait_for(asyncio.shield(job), seconds)
        except TimeoutError:
            return None

    def _job(self, entry: FileEntry) -> asyncio.Task[str | None]:
        job = self._jobs.get(entry.digest)
        if job is None:
            job = asyncio.ensure_future(self._hash(entry))
            self._jobs[entry.digest] = job
            job.add_done_callback(lambda _: self._jobs.pop(entry.digest, None))
        return job

    async def _hash(self, entry: FileEntry) -> str | None:
        async with self._sessions() as session:
            done = (await known(session, [entry.digest])).get(entry.digest)
        if done is not None:
            return done
        async with self._slots:
            try:
                sha256 = await sha256_of(self._store, entry)
            except FileUnreadable as exc:
                log.error("cannot hash %s (%s): %s", entry.path, entry.digest, exc)
                return None
            except Exception:  # a store or index failure: the next request retries
                log.exception("hashing %s (%s) failed", entry.path, entry.digest)
                return None
        async with self._sessions() as session:
            await record(session, entry.digest, sha256)
        return sha256

    async def close(self) -> None:
        """Cancel the jobs in flight (shutdown); a later request queues them again."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
