"""The application context: what the lifespan builds once and every request shares.

Its own module so that both ``api`` (the ``Annotated`` dependencies in ``api/deps.py``)
and ``auth`` (the guard, which opens sessions and reads settings) can reach it without
``auth`` importing ``api``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

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
    """The context of the app serving ``request`` (set by the lifespan in ``app.py``)."""
    context = request.app.state.context
    assert isinstance(context, AppContext)  # noqa: S101 - narrows app.state (the lifespan sets it)
    return context
