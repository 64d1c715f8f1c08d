"""``/v1/repositories/{name}/manifests/{reference}``: commit and fetch manifests.

Names contain a slash (``team/model``), hence ``{name:path}``. Path parameters arrive
validated: the guard (``auth/guard.py``) validates each once, before any route code runs.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from wreg.core.errors import ErrorCode
from wreg.core.mediatypes import MANIFEST_MEDIA_TYPE
from wreg.core.reference import validate_tag
from wreg_server.api.body import openapi_binary, read_limited
from wreg_server.api.caching import IMMUTABLE, REVALIDATE
from wreg_server.api.deps import SessionDep, SettingsDep
from wreg_server.api.schemas import ManifestCommitted
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
    tag: str | None = None,
) -> ManifestCommitted:
    """Commit a canonical manifest whose chunks are all stored; optionally move ``tag``."""
    if tag is not None:  # a query parameter: validated here, before the body is read
        validate_tag(tag)
    body = await read_limited(
        request, settings.max_manifest_bytes, code=ErrorCode.MANIFEST_TOO_LARGE
    )
    created = await manifests.commit(session, name, digest, body, tag)
    response.status_code = 201 if created else 200
    return ManifestCommitted(name=name, digest=digest, tag=tag)


@router.delete("/{name:path}/manifests/{digest}", status_code=204, response_class=Response)
async def delete_manifest(name: str, digest: str, session: SessionDep) -> Response:
    """Delete the manifest (by digest only) and every tag pointing at it.

    Its chunks stay until ``wreg-server gc`` finds them unreferenced past the grace period.
    """
    await manifests.remove(session, name, digest)
    return Response(status_code=204)


@router.get(
    "/{name:path}/manifests/{reference}",
    response_class=Response,
    responses={200: {"content": {MANIFEST_MEDIA_TYPE: {}}}},
)
async def get_manifest(name: str, reference: str, session: SessionDep) -> Response:
    """The manifest bytes, by tag or by digest (a digest is immutable and cacheable)."""
    found = await manifests.resolve(session, name, reference)
    headers = {DIGEST_HEADER: found.digest, "ETag": f'"{found.digest}"'}
    headers["Cache-Control"] = IMMUTABLE if reference == found.digest else REVALIDATE
    return Response(found.body, media_type=MANIFEST_MEDIA_TYPE, headers=headers)
