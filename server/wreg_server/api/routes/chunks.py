"""``/v1/chunks``: ask what is missing, upload, download.

Chunk URLs are immutable — a digest names one content forever — so downloads are
marked cacheable for a year and any HTTP cache or CDN in front may serve them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from wreg.core.digest import validate_digest
from wreg.core.encoding import MEDIA_TYPE
from wreg.core.errors import InvalidInput
from wreg_server.api.body import openapi_binary, openapi_body, read_json, read_limited
from wreg_server.api.deps import SessionDep, SettingsDep, StoreDep
from wreg_server.api.schemas import ChunkStored, MissingRequest, MissingResponse
from wreg_server.domain import chunks

router = APIRouter(prefix="/v1/chunks", tags=["chunks"])

IMMUTABLE = "public, max-age=31536000, immutable"


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
        raise InvalidInput(
            f"at most {settings.max_missing_query} digests per query",
            code="BODY_TOO_LARGE",
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
    validate_digest(digest)
    blob = await read_limited(request, settings.max_chunk_encoded, code="CHUNK_TOO_LARGE")
    info, created = await chunks.upload(
        session, store, digest, blob, max_raw=settings.max_chunk_raw
    )
    response.status_code = 201 if created else 200
    return ChunkStored(digest=info.digest, size=info.size, stored_size=info.stored_size)


@router.get("/{digest}", response_class=Response, responses={200: {"content": {MEDIA_TYPE: {}}}})
async def get_chunk(
    digest: str, request: Request, session: SessionDep, store: StoreDep
) -> Response:
    """The encoded chunk bytes (clients decode and verify them)."""
    headers = _cache_headers(digest)
    if _etag_matches(request, digest):
        await chunks.get(session, digest)
        return Response(status_code=304, headers=headers)
    _info, blob = await chunks.read(session, store, digest)
    return Response(blob, media_type=MEDIA_TYPE, headers=headers)


@router.head("/{digest}", response_class=Response)
async def head_chunk(digest: str, session: SessionDep) -> Response:
    """Whether the chunk exists, and its encoded size, without the bytes."""
    info = await chunks.get(session, digest)
    headers = {**_cache_headers(digest), "Content-Length": str(info.stored_size)}
    return Response(media_type=MEDIA_TYPE, headers=headers)
