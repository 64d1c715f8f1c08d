"""The ``Annotated`` dependencies routes use to reach the app's context (``context.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from wreg_server.auth.guard import PrincipalDep
from wreg_server.context import AppContext, get_context
from wreg_server.domain.access import RepositoryChunks, Visibility
from wreg_server.domain.filehashes import FileHasher
from wreg_server.objectstore import ObjectStore
from wreg_server.settings import ServerSettings

ContextDep = Annotated[AppContext, Depends(get_context)]


def get_settings(context: ContextDep) -> ServerSettings:
    return context.settings


def get_store(context: ContextDep) -> ObjectStore:
    return context.store


async def get_session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    """One session per request; uncommitted work is rolled back when it closes."""
    async with context.sessions() as session:
        yield session


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_visibility(settings: SettingsDep, principal: PrincipalDep) -> Visibility:
    """What this request may see of the chunk store (``domain/access.py``)."""
    if settings.chunk_namespace == "global" or principal.can_all("pull"):
        return Visibility(settings.chunk_namespace)
    return Visibility(settings.chunk_namespace, lambda name: principal.can("pull", name))


def get_repository_chunks(request: Request) -> RepositoryChunks:
    """The app's per-repository chunk sets (created in ``app.py``)."""
    sets = request.app.state.repository_chunks
    assert isinstance(sets, RepositoryChunks)  # noqa: S101 - narrows app.state (app.py sets it)
    return sets


def get_file_hasher(request: Request) -> FileHasher:
    """The app's background sha256 hashing (created by the lifespan in ``app.py``)."""
    hasher = request.app.state.file_hasher
    assert isinstance(hasher, FileHasher)  # noqa: S101 - narrows app.state (the lifespan sets it)
    return hasher


VisibilityDep = Annotated[Visibility, Depends(get_visibility)]
FileHasherDep = Annotated[FileHasher, Depends(get_file_hasher)]
RepositoryChunksDep = Annotated[RepositoryChunks, Depends(get_repository_chunks)]
