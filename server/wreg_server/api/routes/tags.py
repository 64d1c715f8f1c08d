"""``/v1/repositories/{name}/tags[/{tag}]``: move, read, delete and list tags.

The single-tag routes are registered before the list route: with ``{name:path}`` the
list URL of a repository literally named ``x/tags`` is ambiguous, and this order makes
``/v1/repositories/x/tags/tags`` mean tag ``tags`` of ``x``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from wreg.core.reference import validate_name, validate_tag
from wreg_server.api.body import openapi_body, read_json
from wreg_server.api.deps import SessionDep, SettingsDep
from wreg_server.api.schemas import TagEntry, TagList, TagOut, TagRequest
from wreg_server.domain import tags
from wreg_server.domain.views import TagInfo

router = APIRouter(prefix="/v1/repositories", tags=["tags"])


def _out(info: TagInfo) -> TagOut:
    return TagOut(name=info.name, tag=info.tag, digest=info.digest, updated_at=info.updated_at)


@router.put(
    "/{name:path}/tags/{tag}", response_model=TagOut, openapi_extra=openapi_body(TagRequest)
)
async def put_tag(
    name: str, tag: str, request: Request, session: SessionDep, settings: SettingsDep
) -> TagOut:
    """Point the tag at a manifest already committed to this repository."""
    validate_name(name)
    validate_tag(tag)
    body = await read_json(request, TagRequest, settings.max_json_body)
    return _out(await tags.put(session, name, tag, body.digest))


@router.get("/{name:path}/tags/{tag}", response_model=TagOut)
async def get_tag(name: str, tag: str, session: SessionDep) -> TagOut:
    return _out(await tags.get(session, name, tag))


@router.delete("/{name:path}/tags/{tag}", status_code=204, response_class=Response)
async def delete_tag(name: str, tag: str, session: SessionDep) -> Response:
    """Remove the tag; the manifest stays reachable by digest."""
    validate_name(name)
    await tags.remove(session, name, tag)
    return Response(status_code=204)


@router.get("/{name:path}/tags", response_model=TagList)
async def list_tags(name: str, session: SessionDep) -> TagList:
    validate_name(name)
    entries = [
        TagEntry(tag=t.tag, digest=t.digest, updated_at=t.updated_at)
        for t in await tags.list_for(session, name)
    ]
    return TagList(name=name, tags=entries)
