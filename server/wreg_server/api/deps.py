"""The ``Annotated`` dependencies routes use to reach the app's context (``context.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from wreg_server.context import AppContext, get_context
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
