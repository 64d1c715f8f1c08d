"""``/v1/repositories/{name}/manifests/{reference}``: commit and fetch manifests.

Names contain a slash (``team/model``), hence ``{name:path}``. Path parameters arrive
validated: the guard (``auth/guard.py``) validates each once, before any route code runs.

A fetched manifest carries ``ETag: "<its digest>"`` — by tag too, where it is the digest
the tag points at now — and a ``GET``/``HEAD`` whose ``If-None-Match`` names it is a 304.
By digest it is immutable, by tag it must be revalidated (``api/caching.py``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from wreg.core.errors import ErrorCode
from wreg.core.mediatypes import MANIFEST_MEDIA_TYPE
from wreg.core.reference import validate_tag
from wreg_server.api.body import openapi_binary, read_limited
from wreg_server.api.caching import immutable, revalidate
from wreg_server.api.deps import (
    FileHasherDep,
    RepositoryChunksDep,
    SessionDep,
    SettingsDep,
    VisibilityDep,
)
from wreg_server.api.schemas import ManifestCommitted
from wreg_server.auth.guard import PrincipalDep
from wreg_server.domain import manifests

router = APIRouter(prefix="/v1/repositories", tags=["manifests"])

DIGEST_HEADER = "Wreg-Manifest-Digest"


@router.put(
    "/{name:path}/manifests/{digest}",
    status_code=201,
    response_model=ManifestCommitted,
    responses={200: {"model": ManifestCommitted, "description": "already committed"}},
    openapi_extra=openapi_binary(MANIFEST_MEDIA_TYPE),
)
async def put_manifest(
    name: str,
    digest: str,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    visibility: VisibilityDep,
    sets: RepositoryChunksDep,
    hasher: FileHasherDep,
    principal: PrincipalDep,
    tag: str | None = None,
) -> ManifestCommitted:
    """Commit a canonical manifest whose chunks are all stored; optionally move ``tag``."""
    if tag is not None:  # a query parameter: validated here, before the body is read
        validate_tag(tag)
    body = await read_limited(
        request, settings.max_manifest_bytes, code=ErrorCode.MANIFEST_TOO_LARGE
    )
    created = await manifests.commit(
        session, name, digest, body, tag, visibility=visibility, pushed_by=principal.name
    )
    if created is not None:
        sets.add(name, created.chunk_digests())
        if settings.hf_hash_on_commit:  # sha256s for the HF API (domain/filehashes.py)
            hasher.schedule(created.files)
    response.status_code = 201 if created is not None else 200
    return ManifestCommitted(name=name, digest=digest, tag=tag)


@router.delete("/{name:path}/manifests/{digest}", status_code=204, response_class=Response)
async def delete_manifest(
    name: str, digest: str, session: SessionDep, sets: RepositoryChunksDep
) -> Response:
    """Delete the manifest (by digest only) and every tag pointing at it.

    Its chunks stay until ``wreg-server gc`` finds them unreferenced past the grace period,
    but are no longer readable through ``name`` unless another of its manifests has them.
    """
    await manifests.remove(session, name, digest)
    sets.forget(name)
    return Response(status_code=204)


def _etag_matches(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2) or is ``*``."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


@router.get(
    "/{name:path}/manifests/{reference}",
    response_class=Response,
    responses={
        200: {"content": {MANIFEST_MEDIA_TYPE: {}}},
        304: {"description": "If-None-Match names this manifest's digest"},
    },
)
@router.head(
    "/{name:path}/manifests/{reference}",
    response_class=Response,
    responses={304: {"description": "If-None-Match names this manifest's digest"}},
)
async def get_manifest(
    name: str, reference: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    """The manifest bytes, by tag or by digest (a digest is immutable and cacheable)."""
    found = await manifests.resolve(session, name, reference)
    etag = f'"{found.digest}"'
    cache = immutable(settings) if reference == found.digest else revalidate(settings)
    headers = {DIGEST_HEADER: found.digest, "ETag": etag, "Cache-Control": cache}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=MANIFEST_MEDIA_TYPE, headers=headers)
