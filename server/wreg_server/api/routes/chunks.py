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

Batches, for the per-request overhead of many small chunks (framing: ``wreg.core.batch``):

* ``POST .../chunks/fetch`` with ``{"digests": [...]}`` (at most ``max_batch_chunks``)
  answers the encoded chunks as frames in request order (duplicates repeated). It needs
  only pull (``auth/guard.py``) and checks every digest as a single ``GET`` would:
  if any is not readable through ``name`` or not stored, the whole request is a 404
  ``CHUNK_UNKNOWN`` whose ``detail.digests`` lists them (unreadable and unknown alike,
  so it tells no more than single GETs), before any byte is sent; an answer that would
  pass ``max_batch_bytes`` is a 413 ``BODY_TOO_LARGE``, also before any byte. The
  answer is assembled in memory (at most ``max_batch_bytes``), so its status is always
  the truth; it is never cached (``no-store``: the single-chunk ``GET`` is the
  cacheable route) and never redirected to the object store.
* ``POST .../chunks/upload`` takes a body of frames (at most ``max_batch_bytes`` and
  ``max_batch_chunks``); every chunk is decoded and verified exactly as a single
  ``PUT`` (and claimed for ``name``). All or nothing as to verification: malformed
  framing (or no frame at all) is a 400 ``BODY_INVALID``, and one chunk that fails
  (``DIGEST_MISMATCH``, ``CHUNK_INVALID``, ``CHUNK_TOO_LARGE``) refuses the whole batch
  — its error names the digest and ``detail.frame`` — before any chunk is stored. Answered 201 with
  ``{"chunks": [{"digest", "size", "stored_size"}...]}``, one per frame, in order.
"""

from __future__ import annotations

import os

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from wreg.core import batch
from wreg.core.digest import validate_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.mediatypes import CHUNK_FRAMES_MEDIA_TYPE, CHUNK_MEDIA_TYPE, LARGE_BATCHES_HEADER
from wreg_server.api.body import openapi_binary, openapi_body, read_json, read_limited
from wreg_server.api.caching import NO_STORE, immutable
from wreg_server.api.deps import (
    RepositoryChunksDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    VisibilityDep,
)
from wreg_server.api.schemas import (
    BatchStored,
    ChunkStored,
    FetchRequest,
    MissingRequest,
    MissingResponse,
)
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


@router.post(
    "/{name:path}/chunks/fetch",
    response_class=Response,
    responses={200: {"content": {CHUNK_FRAMES_MEDIA_TYPE: {}}}},
    openapi_extra=openapi_body(FetchRequest),
)
async def fetch_chunks(
    name: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    visibility: VisibilityDep,
    sets: RepositoryChunksDep,
) -> Response:
    """Many encoded chunks readable through ``name``, as frames in request order
    (module docstring); needs pull, like a single ``GET``."""
    query = await read_json(request, FetchRequest, settings.max_json_body)
    if len(query.digests) > settings.max_batch_chunks:
        raise _too_many(settings, len(query.digests))
    digests = [validate_digest(d) for d in query.digests]
    hidden = set(await access.unreadable(session, sets, visibility, name, digests))
    infos = await chunks.infos_of(session, [d for d in digests if d not in hidden])
    unknown = [d for d in dict.fromkeys(digests) if d in hidden or d not in infos]
    if unknown:
        raise ErrorCode.CHUNK_UNKNOWN.error(
            f"{len(unknown)} chunk(s) of the batch are unknown: {', '.join(unknown[:3])}"
            + (", ..." if len(unknown) > 3 else ""),
            detail={"digests": unknown},
        )
    declared = sum(infos[d].stored_size + batch.FRAME_HEADER_SIZE for d in digests)
    _check_answer_size(settings, declared)
    data = await chunks.read_many(store, digests)
    _check_answer_size(settings, sum(len(b) + batch.FRAME_HEADER_SIZE for b in data))
    parts: list[bytes] = []
    for digest, encoded in zip(digests, data, strict=True):
        parts.append(batch.frame_header(digest, len(encoded)))
        parts.append(encoded)
    headers = {"Cache-Control": NO_STORE}
    if digests and settings.large_batches and store.local_path(chunk_key(digests[0])):
        headers[LARGE_BATCHES_HEADER] = "yes"
    return Response(b"".join(parts), media_type=CHUNK_FRAMES_MEDIA_TYPE, headers=headers)


@router.post(
    "/{name:path}/chunks/upload",
    status_code=201,
    response_model=BatchStored,
    openapi_extra=openapi_binary("application/octet-stream"),  # frames; any type accepted
)
async def upload_chunks(
    name: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> BatchStored:
    """Upload many encoded chunks through ``name`` as frames; each is decoded and
    verified like a single ``PUT``, and one bad chunk refuses the batch (module docstring)."""
    body = await read_limited(request, settings.max_batch_bytes)
    items = list(
        batch.frames(
            body, max_count=settings.max_batch_chunks, max_length=settings.max_chunk_encoded
        )
    )
    if not items:
        raise ErrorCode.BODY_INVALID.error("an upload batch must hold at least one chunk")
    scoped = settings.chunk_namespace == "repository"
    stored = await chunks.upload_many(
        session, store, items, max_raw=settings.max_chunk_raw, through=name if scoped else None
    )
    # As for single uploads, the answer is the same whether the registry held a chunk.
    return BatchStored(
        chunks=[
            ChunkStored(digest=digest, size=info.size, stored_size=len(encoded))
            for (digest, encoded), (info, _new) in zip(items, stored, strict=True)
        ]
    )


def _too_many(settings: ServerSettings, count: int) -> WregError:
    return ErrorCode.BODY_TOO_LARGE.error(
        f"at most {settings.max_batch_chunks} chunks per batch",
        detail={"limit": settings.max_batch_chunks, "count": count},
    )


def _check_answer_size(settings: ServerSettings, size: int) -> None:
    if size > settings.max_batch_bytes:
        raise ErrorCode.BODY_TOO_LARGE.error(
            f"the chunks asked for add up to {size} encoded bytes, over the limit of "
            f"{settings.max_batch_bytes} per batch: ask for fewer at a time",
            detail={"limit": settings.max_batch_bytes, "size": size},
        )


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

    Most downloads never get here: ``api/hotpath.py`` answers the common case (a cached
    token, a loaded digest set) before routing; this is the path for the first read of
    a repository or token, and what the hot path proves it matches.

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
