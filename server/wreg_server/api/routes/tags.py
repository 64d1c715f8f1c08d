"""``/v1/repositories/{name}/tags[/{tag}]``: move, read, delete and list tags.

The single-tag routes are registered before the list route: with ``{name:path}`` the
list URL of a repository literally named ``x/tags`` is ambiguous, and this order makes
``/v1/repositories/x/tags/tags`` mean tag ``tags`` of ``x``. Path parameters arrive
validated: the guard (``auth/guard.py``) validates each once, before any route code runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from wreg.core.digest import validate_digest
from wreg.core.errors import ErrorCode, InvalidInput
from wreg_server.api.body import openapi_body, read_json
from wreg_server.api.caching import no_store
from wreg_server.api.deps import SessionDep, SettingsDep
from wreg_server.api.schemas import TagEntry, TagList, TagOut, TagRequest
from wreg_server.domain import tags
from wreg_server.domain.views import TagInfo

# Tags move: no answer here may be cached (api/caching.py).
router = APIRouter(prefix="/v1/repositories", tags=["tags"], dependencies=[Depends(no_store)])


def _out(info: TagInfo, response: Response) -> TagOut:
    response.headers["ETag"] = f'"{info.digest}"'
    return TagOut(name=info.name, tag=info.tag, digest=info.digest, updated_at=info.updated_at)


def _etags(header: str, value: str | None) -> tuple[str, ...] | None:
    """The entity tags of a precondition header: ``*`` or digests, quoted or not."""
    if value is None:
        return None
    etags = []
    for item in (part.strip() for part in value.split(",")):
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1]
        if item != "*":
            try:
                validate_digest(item)
            except InvalidInput:
                raise ErrorCode.DIGEST_INVALID.error(
                    f'{header} must be * or "blake3:<hex>" manifest digests, got {value!r}',
                    detail={"header": header, "value": value},
                ) from None
        etags.append(item)
    return tuple(etags)


def _precondition(if_match: str | None, if_none_match: str | None) -> tags.Precondition | None:
    if if_match is None and if_none_match is None:
        return None
    return tags.Precondition(_etags("If-Match", if_match), _etags("If-None-Match", if_none_match))


IfMatch = Annotated[
    str | None,
    Header(
        description="compare-and-swap: apply only if the tag points at this digest "
        '(`"blake3:…"`, or `*` for "exists"); otherwise 412 TAG_CONFLICT'
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(description="apply only if the tag does not point at this digest (`*`: create only)"),
]


@router.put(
    "/{name:path}/tags/{tag}",
    response_model=TagOut,
    openapi_extra=openapi_body(TagRequest),
    responses={412: {"description": "TAG_CONFLICT: the If-Match/If-None-Match check failed"}},
)
async def put_tag(
    name: str,
    tag: str,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> TagOut:
    """Point the tag at a manifest already committed to this repository.

    Last writer wins, unless ``If-Match``/``If-None-Match`` make it a compare-and-swap.
    """
    precondition = _precondition(if_match, if_none_match)
    body = await read_json(request, TagRequest, settings.max_json_body)
    return _out(await tags.put(session, name, tag, body.digest, precondition), response)


@router.get("/{name:path}/tags/{tag}", response_model=TagOut)
async def get_tag(name: str, tag: str, response: Response, session: SessionDep) -> TagOut:
    """The tag and, in ``ETag``, the digest it points at (for a later ``If-Match``)."""
    return _out(await tags.get(session, name, tag), response)


@router.delete("/{name:path}/tags/{tag}", status_code=204, response_class=Response)
async def delete_tag(
    name: str,
    tag: str,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Remove the tag; the manifest stays reachable by digest. ``If-Match`` as for ``PUT``."""
    await tags.remove(session, name, tag, _precondition(if_match, None))
    return Response(status_code=204)


@router.get("/{name:path}/tags", response_model=TagList)
async def list_tags(name: str, session: SessionDep) -> TagList:
    entries = [
        TagEntry(tag=t.tag, digest=t.digest, updated_at=t.updated_at)
        for t in await tags.list_for(session, name)
    ]
    return TagList(name=name, tags=entries)
