"""LFS objects: files uploaded whole through the HF API's LFS transfer, by sha256, until
a commit names them (``hf/uploads.py``); see ``db/models.py`` (``LfsObject``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.manifest import ChunkRef
from wreg_server.db import dialect
from wreg_server.db.models import LfsObject
from wreg_server.db.types import utcnow


async def record(
    session: AsyncSession, repository: str, sha256: str, chunks: Iterable[ChunkRef]
) -> None:
    """Remember an uploaded object's chunks for ``repository`` (idempotent; commits)."""
    refs = list(chunks)
    body = json.dumps([[c.digest, c.size] for c in refs]).encode()
    stmt = dialect.insert(session, LfsObject).values(
        repository=repository,
        sha256=sha256,
        size=sum(c.size for c in refs),
        chunks=body,
        created_at=utcnow(),
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["repository", "sha256"]))
    await session.commit()


async def find(
    session: AsyncSession, repository: str, sha256s: Iterable[str]
) -> dict[str, tuple[ChunkRef, ...]]:
    """sha256 → chunks of the objects among ``sha256s`` uploaded through ``repository``."""
    wanted = list(dict.fromkeys(sha256s))
    found: dict[str, tuple[ChunkRef, ...]] = {}
    for at in range(0, len(wanted), 500):
        rows = await session.execute(
            select(LfsObject.sha256, LfsObject.chunks).where(
                LfsObject.repository == repository,
                LfsObject.sha256.in_(wanted[at : at + 500]),
            )
        )
        for sha256, body in rows:
            found[sha256] = tuple(ChunkRef(d, int(n)) for d, n in json.loads(body))
    return found
