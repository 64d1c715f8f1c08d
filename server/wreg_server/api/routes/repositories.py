"""``/v1/repositories``: every repository the caller may pull, with its tag names."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from wreg_server.api.caching import no_store
from wreg_server.api.deps import SessionDep
from wreg_server.api.schemas import RepositoryEntry, RepositoryList
from wreg_server.auth.guard import PrincipalDep
from wreg_server.domain import repositories

router = APIRouter(
    prefix="/v1/repositories", tags=["repositories"], dependencies=[Depends(no_store)]
)


@router.get("", response_model=RepositoryList)
async def list_repositories(session: SessionDep, principal: PrincipalDep) -> RepositoryList:
    entries = [
        RepositoryEntry(name=r.name, tags=list(r.tags), updated_at=r.updated_at)
        for r in await repositories.list_all(session)
        if principal.can("pull", r.name)
    ]
    return RepositoryList(repositories=entries)
