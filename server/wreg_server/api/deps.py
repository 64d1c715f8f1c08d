"""Per-app state and the ``Annotated`` dependencies routes use to reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from wreg_server.objectstore import ObjectStore
from wreg_server.settings import ServerSettings


@dataclass(frozen=True, slots=True)
class AppContext:
    """What the lifespan builds once and every request shares."""

    settings: ServerSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore


def get_context(request: Request) -> AppContext:
    context = request.app.state.context
    assert isinstance(context, AppContext)
    return context


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
