"""``/v1/chunks``: ask what is missing, upload, download.

Chunk URLs are immutable — a digest names one content forever — so downloads are
marked cacheable for a year and any HTTP cache or CDN in front may serve them. With an
S3 store and ``WREG_S3_REDIRECT`` on, a download is instead a 307 to a presigned URL
that expires soon, so the redirect itself is marked ``no-store``: a cache that kept it
for a year would hand out a dead link (``api/caching.py``). ``{digest}`` arrives
validated: the guard validates every path parameter once, before any route code runs.
"""

from __future__ import annotations

import os

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from wreg.core.errors import ErrorCode
from wreg.core.mediatypes import CHUNK_MEDIA_TYPE
from wreg_server.api.body import openapi_binary, openapi_body, read_json, read_limited
from wreg_server.api.caching import IMMUTABLE, NO_STORE
from wreg_server.api.deps import SessionDep, SettingsDep, StoreDep
from wreg_server.api.schemas import ChunkStored, MissingRequest, MissingResponse
from wreg_server.domain import chunks
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectStore

router = APIRouter(prefix="/v1/chunks", tags=["chunks"])


def _cache_headers(digest: str) -> dict[str, str]:
    return {"Cache-Control": IMMUTABLE, "ETag": f'"{digest}"'}


def _etag_matches(request: Request, digest: str) -> bool:
    header = request.headers.get("if-none-match", "")
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return f'"{digest}"' in tags or "*" in tags


@router.post("/missing", response_model=MissingResponse, openapi_extra=openapi_body(MissingRequest))
async def missing(request: Request, session: SessionDep, settings: SettingsDep) -> MissingResponse:
    """Which of these digests the registry lacks (request order kept, duplicates dropped)."""
    query = await read_json(request, MissingRequest, settings.max_json_body)
    if len(query.digests) > settings.max_missing_query:
        raise ErrorCode.BODY_TOO_LARGE.error(
            f"at most {settings.max_missing_query} digests per query",
            detail={"limit": settings.max_missing_query, "count": len(query.digests)},
        )
    return MissingResponse(missing=await chunks.missing(session, query.digests))


@router.put(
    "/{digest}",
    status_code=201,
    response_model=ChunkStored,
    responses={200: {"model": ChunkStored, "description": "already stored"}},
    openapi_extra=openapi_binary("application/octet-stream"),
)
async def put_chunk(
    digest: str,
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ChunkStored:
    """Upload one encoded chunk; it is decoded and verified before it becomes visible."""
    encoded = await read_limited(
        request, settings.max_chunk_encoded, code=ErrorCode.CHUNK_TOO_LARGE
    )
    info, created = await chunks.upload(
        session, store, digest, encoded, max_raw=settings.max_chunk_raw
    )
    response.status_code = 201 if created else 200
    return ChunkStored(digest=info.digest, size=info.size, stored_size=info.stored_size)


@router.get(
    "/{digest}",
    response_class=Response,
    responses={
        200: {"content": {CHUNK_MEDIA_TYPE: {}}},
        307: {"description": "fetch the chunk from this presigned object-store URL"},
    },
)
async def get_chunk(
    digest: str, request: Request, session: SessionDep, store: StoreDep
) -> Response:
    """The encoded chunk bytes (clients decode and verify them), or a redirect to them."""
    headers = _cache_headers(digest)
    if _etag_matches(request, digest):
        await chunks.get(session, digest)
        return Response(status_code=304, headers=headers)
    local = await _local_file(request, store, digest)
    if local is not None:
        return local
    found = await chunks.fetch(session, store, digest)
    if isinstance(found, str):
        return RedirectResponse(found, status_code=307, headers={"Cache-Control": NO_STORE})
    return Response(found, media_type=CHUNK_MEDIA_TYPE, headers=headers)


async def _local_file(request: Request, store: ObjectStore, digest: str) -> Response | None:
    """Serve a file-store object straight from disk, without touching the index.

    Downloads are the hot path: this skips a database round trip. The index is not
    consulted because a digest names its bytes forever and the client verifies them: an
    object whose row is gone (GC in progress, an upload that crashed before its row) is
    still the right content, and a missing file falls back to the index path, which
    answers CHUNK_UNKNOWN. Under an ASGI server with ``http.response.pathsend`` (granian)
    the server sends the file itself; otherwise one read in a worker thread beats
    FileResponse's 64 KiB reads, each a thread hop (``bench/server_data_path.py``).
    """
    path = store.local_path(chunk_key(digest))
    if path is None:
        return None
    headers = _cache_headers(digest)
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


@router.head("/{digest}", response_class=Response)
async def head_chunk(digest: str, session: SessionDep) -> Response:
    """Whether the chunk exists, and its encoded size, without the bytes."""
    info = await chunks.get(session, digest)
    headers = {**_cache_headers(digest), "Content-Length": str(info.stored_size)}
    return Response(media_type=CHUNK_MEDIA_TYPE, headers=headers)
