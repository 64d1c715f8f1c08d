"""The ASGI application: ``create_app(settings)``.

The lifespan opens the index (migrating SQLite on the way, so a fresh data directory just
works) and the object store, and closes both on shutdown. Nothing is opened at import
time, so tests can build as many apps with explicit settings as they like.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import Depends, FastAPI

from wreg_server import hf, ui
from wreg_server.api import errors, openapi
from wreg_server.api.hotpath import ChunkDownloads
from wreg_server.api.middleware import RequestContextMiddleware
from wreg_server.api.routes import (
    authcheck,
    chunks,
    health,
    inspect,
    manifests,
    repositories,
    retention,
    tags,
    tokens,
)
from wreg_server.auth.guard import TokenCache, guard
from wreg_server.context import AppContext
from wreg_server.db.migrate import upgrade_engine
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.domain.access import RepositoryChunks
from wreg_server.domain.filehashes import FileHasher
from wreg_server.metrics import Metrics
from wreg_server.objectstore import from_settings
from wreg_server.settings import ServerSettings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """A registry app over ``settings`` (default: the environment's)."""
    settings = settings if settings is not None else get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, settings.database_pool_size)
        store = from_settings(settings)
        sessions = create_sessionmaker(engine)
        hasher = FileHasher(sessions, store)
        try:
            if settings.is_sqlite and settings.migrate_on_start:
                await upgrade_engine(engine)
            swept = await to_thread.run_sync(hf.sweep_spool, settings.data / "tmp")
            if swept:
                log.info("removed %d stale spool directories from %s", swept, settings.data / "tmp")
            app.state.context = AppContext(
                settings=settings,
                engine=engine,
                sessions=sessions,
                store=store,
            )
            app.state.file_hasher = hasher
            log.info("wreg-server ready: index %s, store %s", engine.url, store.name)
            yield
        finally:
            await hf.close(app)
            await hasher.close()
            await store.close()
            await engine.dispose()

    app = FastAPI(
        title="wreg",
        summary="Content-addressed registry for ML model weights",
        version="1",
        lifespan=lifespan,
        # Every route: validate path parameters, then check the token (auth/guard.py).
        dependencies=[Depends(guard)],
        # Starlette answers ``/v1/tokens/`` with a 307 to a URL built from the request's
        # ``Host`` header (a redirect anyone can point anywhere); a trailing slash is
        # simply not a route here: 404.
        redirect_slashes=False,
        # /docs is served from a package, not a CDN (api/openapi.py); ReDoc needs a CDN.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    openapi.install(app)
    app.state.metrics = Metrics()
    app.state.token_cache = TokenCache(settings.auth_cache_seconds)
    app.state.repository_chunks = RepositoryChunks(settings.auth_cache_seconds)
    # Chunk downloads the full route would answer are answered first, inside the request
    # context (ids, logs, metrics, error envelope) and ahead of routing (api/hotpath.py).
    app.add_middleware(ChunkDownloads)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.include_router(health.router)
    if settings.chunk_namespace == "global":
        app.include_router(chunks.global_router)
    app.include_router(repositories.router)
    # Single-tag routes before the tag list (see routes/tags.py), manifests alongside.
    app.include_router(manifests.router)
    app.include_router(inspect.router)  # manifest descriptions (wreg inspect / diff)
    app.include_router(tags.router)
    app.include_router(retention.router)  # after tags (a tag may be named "retention")
    # Chunks under a repository, after manifests and tags: ``{name:path}`` is greedy.
    app.include_router(chunks.router)
    app.include_router(tokens.router)
    app.include_router(authcheck.router)  # for a cache in front (nginx auth_request)
    app.include_router(ui.router)  # the web UI (ui/): /ui pages, before hf's catch-all
    hf.install(app)  # the Hugging Face API (hf/): last, its resolve route starts at "/"
    return app
