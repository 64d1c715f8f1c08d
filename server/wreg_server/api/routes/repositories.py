"""``/v1/repositories``: every repository with its tag names."""

from __future__ import annotations

from fastapi import APIRouter

from wreg_server.api.deps import SessionDep
from wreg_server.api.schemas import RepositoryEntry, RepositoryList
from wreg_server.domain import repositories

router = APIRouter(prefix="/v1/repositories", tags=["repositories"])


@router.get("", response_model=RepositoryList)
async def list_repositories(session: SessionDep) -> RepositoryList:
    entries = [
        RepositoryEntry(name=r.name, tags=list(r.tags), updated_at=r.updated_at)
        for r in await repositories.list_all(session)
    ]
    return RepositoryList(repositories=entries)
