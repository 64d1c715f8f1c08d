"""Chunks: ask what is missing, upload, download — through a repository.

``/v1/repositories/{name}/chunks/...`` is where chunks are read and written: a chunk is
readable through ``name`` only if a manifest of ``name`` references it, and a push to
``name`` may reuse a stored chunk only if it can show it may (``domain/access.py``);
every other chunk answers exactly like one that is not stored. The global
``/v1/chunks/...`` routes are served only under ``WREG_CHUNK_NAMESPACE=global``.

Chunk URLs are immutable — a digest names one content forever — so downloads are
marked cacheable for a year (``private`` with auth on, ``api/caching.py``). With an S3
store and ``WREG_S3_REDIRECT`` on, a download is instead a 307 to a presigned URL that
expires soon, so the redirect itself is marked ``no-store``: a cache that kept it for a
year would hand out a dead link. Path parameters arrive validated: the guard validates
every one once, before any route code runs.
"""

from __future__ import annotations

import os

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from wreg.core.errors import ErrorCode
from wreg.core.mediatypes import CHUNK_MEDIA_TYPE
from wreg_server.api.body import openapi_binary, openapi_body, read_json, read_limited
from wreg_server.api.caching import NO_STORE, immutable
from wreg_server.api.deps import (
    RepositoryChunksDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    VisibilityDep,
)
from wreg_server.api.schemas import ChunkStored, MissingRequest, MissingResponse
from wreg_server.domain import access, chunks
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectStore
from wreg_server.settings import ServerSettings

router = APIRouter(prefix="/v1/repositories", tags=["chunks"])
global_router = APIRouter(prefix="/v1/chunks", tags=["chunks (global namespace)"])

_GET_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {CHUNK_MEDIA_TYPE: {}}},
    307: {"description": "fetch the chunk from this presigned object-store URL"},
}


def _cache_headers(settings: ServerSettings, digest: str) -> dict[str, str]:
    return {"Cache-Control": immutable(settings), "ETag": f'"{digest}"'}


def _etag_matches(request: Request, digest: str) -> bool:
    header = request.headers.get("if-none-match", "")
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return f'"{digest}"' in tags or "*" in tags


# -- through a repository --------------------------------------------------------------


@router.post(
    "/{name:path}/chunks/missing",
    response_model=MissingResponse,
    openapi_extra=openapi_body(MissingRequest),
)
async def missing(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visibility: VisibilityDep,
) -> MissingResponse:
    """Which of these digests a push to ``name`` must upload (request order kept,
    duplicates dropped): those not stored, and those this token may not reuse."""
    return MissingResponse(missing=await _missing(request, session, settings, visibility, name))


@router.put(
    "/{name:path}/chunks/{digest}",
    status_code=201,
    response_model=ChunkStored,
    openapi_extra=openapi_binary("application/octet-stream"),
)
async def put_chunk(
    name: str,
    digest: str,
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ChunkStored:
    """Upload one encoded chunk through ``name``; it is decoded and verified before it
    becomes visible, and proves the push may reference it. Answered like a first upload
    whether or not the registry held it (global namespace: 200 when it did)."""
    return await _put(request, response, session, store, settings, digest, name)


@router.get("/{name:path}/chunks/{digest}", response_class=Response, responses=_GET_RESPONSES)
async def get_chunk(
    name: str,
    digest: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    visibility: VisibilityDep,
    sets: RepositoryChunksDep,
) -> Response:
    """The encoded chunk bytes (clients decode and verify them), or a redirect to them."""
    if not await access.readable(session, sets, visibility, name, digest):
        raise chunks.unknown(digest)
    return await _get(request, session, store, settings, digest)


@router.head("/{name:path}/chunks/{digest}", response_class=Response)
async def head_chunk(
    name: str,
    digest: str,
    session: SessionDep,
    settings: SettingsDep,
    visibility: VisibilityDep,
    sets: RepositoryChunksDep,
) -> Response:
    """Whether the chunk is readable through ``name``, and its encoded size."""
    if not await access.readable(session, sets, visibility, name, digest):
        raise chunks.unknown(digest)
    return await _head(session, settings, digest)


# -- global namespace (WREG_CHUNK_NAMESPACE=global only) -----------------------------


@global_router.post(
    "/missing", response_model=MissingResponse, openapi_extra=openapi_body(MissingRequest)
)
async def missing_global(
    request: Request, session: SessionDep, settings: SettingsDep, visibility: VisibilityDep
) -> MissingResponse:
    """Which of these digests the registry lacks (request order kept, duplicates dropped)."""
    return MissingResponse(missing=await _missing(request, session, settings, visibility, None))


@global_router.put(
    "/{digest}",
    status_code=201,
    response_model=ChunkStored,
    responses={200: {"model": ChunkStored, "description": "already stored"}},
    openapi_extra=openapi_binary("application/octet-stream"),
)
async def put_chunk_global(
    digest: str,
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ChunkStored:
    """Upload one encoded chunk; it is decoded and verified before it becomes visible."""
    return await _put(request, response, session, store, settings, digest, None)


@global_router.get("/{digest}", response_class=Response, responses=_GET_RESPONSES)
async def get_chunk_global(
    digest: str, request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """The encoded chunk bytes (clients decode and verify them), or a redirect to them."""
    return await _get(request, session, store, settings, digest)


@global_router.head("/{digest}", response_class=Response)
async def head_chunk_global(digest: str, session: SessionDep, settings: SettingsDep) -> Response:
    """Whether the chunk exists, and its encoded size, without the bytes."""
    return await _head(session, settings, digest)


# -- shared by both ------------------------------------------------------------------


async def _missing(
    request: Request,
    session: SessionDep,
    settings: ServerSettings,
    visibility: access.Visibility,
    name: str | None,
) -> list[str]:
    query = await read_json(request, MissingRequest, settings.max_json_body)
    if len(query.digests) > settings.max_missing_query:
        raise ErrorCode.BODY_TOO_LARGE.error(
            f"at most {settings.max_missing_query} digests per query",
            detail={"limit": settings.max_missing_query, "count": len(query.digests)},
        )
    return await access.missing(session, visibility, name or "", query.digests)


async def _put(
    request: Request,
    response: Response,
    session: SessionDep,
    store: ObjectStore,
    settings: ServerSettings,
    digest: str,
    name: str | None,
) -> ChunkStored:
    encoded = await read_limited(
        request, settings.max_chunk_encoded, code=ErrorCode.CHUNK_TOO_LARGE
    )
    scoped = name is not None and settings.chunk_namespace == "repository"
    info, created = await chunks.upload(
        session,
        store,
        digest,
        encoded,
        max_raw=settings.max_chunk_raw,
        through=name if scoped else None,
    )
    if scoped:
        # Answered like a first upload: whether the bytes were stored before is not this
        # caller's to learn (only their own repository's chunks are).
        response.status_code = 201
        return ChunkStored(digest=digest, size=info.size, stored_size=len(encoded))
    response.status_code = 201 if created else 200
    return ChunkStored(digest=info.digest, size=info.size, stored_size=info.stored_size)


async def _get(
    request: Request, session: SessionDep, store: ObjectStore, settings: ServerSettings, digest: str
) -> Response:
    headers = _cache_headers(settings, digest)
    if _etag_matches(request, digest):
        await chunks.get(session, digest)
        return Response(status_code=304, headers=headers)
    local = await _local_file(request, store, headers, digest)
    if local is not None:
        return local
    found = await chunks.fetch(session, store, digest)
    if isinstance(found, str):
        return RedirectResponse(found, status_code=307, headers={"Cache-Control": NO_STORE})
    return Response(found, media_type=CHUNK_MEDIA_TYPE, headers=headers)


async def _head(session: SessionDep, settings: ServerSettings, digest: str) -> Response:
    info = await chunks.get(session, digest)
    headers = {**_cache_headers(settings, digest), "Content-Length": str(info.stored_size)}
    return Response(media_type=CHUNK_MEDIA_TYPE, headers=headers)


async def _local_file(
    request: Request, store: ObjectStore, headers: dict[str, str], digest: str
) -> Response | None:
    """Serve a file-store object straight from disk, without touching the index.

    Downloads are the hot path: this skips a database round trip. The index is not
    consulted because a digest names its bytes forever and the client verifies them: an
    object whose row is gone (GC in progress, an upload that crashed before its row) is
    still the right content, and a missing file falls back to the index path, which
    answers CHUNK_UNKNOWN. (Through a repository, the caller's right to read the chunk
    was checked before: ``access.readable``.) Under an ASGI server with
    ``http.response.pathsend`` (granian) the server sends the file itself; otherwise one
    read in a worker thread beats FileResponse's 64 KiB reads, each a thread hop
    (``bench/server_data_path.py``).
    """
    path = store.local_path(chunk_key(digest))
    if path is None:
        return None
    try:
        if "http.response.pathsend" in request.scope.get("extensions", {}):
            stat = os.stat(path)
            return FileResponse(
                path, stat_result=stat, media_type=CHUNK_MEDIA_TYPE, headers=headers
            )
        body = await to_thread.run_sync(path.read_bytes)
    except FileNotFoundError:
        return None
    return Response(body, media_type=CHUNK_MEDIA_TYPE, headers=headers)
