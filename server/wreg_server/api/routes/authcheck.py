"""``GET /v1/auth/check``: may this token read that URL? — for a cache in front.

An auth-aware cache (nginx ``auth_request``; README, "Deployment: a cache in front") asks
this before it serves a chunk or a manifest, cached or not, passing the client's
``Authorization`` header through and naming the request it judges in two headers:
``X-Original-Method`` (``$request_method``) and ``X-Original-URI`` (``$request_uri``, the
raw target the registry itself would be sent).

The guard has already authenticated the caller (``auth/guard.py``, ``CALLER_ROUTES``): no
token is a 401 (unless anonymous pull is on), a bad one too. Here the judged request is
routed by this very app, the way the app would route it — query dropped, percent-decoding
as uvicorn does it — and ``required()`` says what it needs, so the check and the guard
cannot disagree. It grants (204) only a read (``GET``/``HEAD``) of a route under
``/v1/repositories/{name}/`` whose ``name`` the token may pull; without a token where one
is needed that is a 401, else a 403 — which is all nginx's ``auth_request`` understands
(any other status is a 500 there). Everything else is a 403, failing closed: a write, a
listing, the token API, an unknown route, a missing header, a target that is not a path
(``http://…``, ``*``), has a fragment or ``.``/``..`` segments, or a path parameter that
does not validate.

Cheap: the guard's token cache (``WREG_AUTH_CACHE_SECONDS``) spares the index for a token
seen recently, and routing is a regular-expression match per route; nothing else is read.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from wreg.core.errors import ErrorCode, InvalidInput, WregError
from wreg_server.api.caching import NO_STORE
from wreg_server.auth.guard import PULL_METHODS, PrincipalDep, required, validate_params

router = APIRouter(prefix="/v1/auth", tags=["auth"])

OriginalMethod = Annotated[
    str | None,
    Header(alias="X-Original-Method", description="the judged request's method"),
]
OriginalUri = Annotated[
    str | None,
    Header(
        alias="X-Original-URI",
        description="the judged request's target, as sent (nginx `$request_uri`)",
    ),
]


def _refuse(message: str, **detail: Any) -> WregError:
    return ErrorCode.DENIED.error(message, detail=detail or None)


def decoded_path(target: str) -> str:
    """The path the app would route for this request target; ``DENIED`` if it is not a
    plain origin-form path (``/…``, no fragment) or has a ``.`` or ``..`` segment."""
    raw = target.partition("?")[0]
    if not raw.startswith("/") or "#" in raw:
        raise _refuse("X-Original-URI must be a path (/v1/…)", uri=target)
    path = unquote(raw)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise _refuse("X-Original-URI must not have . or .. segments", uri=target)
    return path


def route_of(request: Request, method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The template and path parameters this app routes ``method path`` to, as its router
    does: routes in the order registered (``iter_route_contexts`` flattens included
    routers), the first full match, else the first match of the path alone."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    partial: tuple[str, dict[str, str]] | None = None
    for route in iter_route_contexts(request.app.router.routes):
        match, child = route.matches(scope)
        if match is Match.NONE or not route.path_format:
            continue
        found = (route.path_format, {k: str(v) for k, v in child["path_params"].items()})
        if match is Match.FULL:
            return found
        partial = partial or found
    return partial


_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "the token may make the judged request"}
}


# HEAD too: an auth subrequest may carry the judged request's method.
@router.get("/check", status_code=204, response_class=Response, responses=_RESPONSES)
@router.head("/check", status_code=204, response_class=Response, responses=_RESPONSES)
async def check(
    request: Request,
    principal: PrincipalDep,
    original_method: OriginalMethod = None,
    original_uri: OriginalUri = None,
) -> Response:
    """204 if the caller's token may make the request named by ``X-Original-Method`` and
    ``X-Original-URI`` (a read under ``/v1/repositories/{name}/``); else 401 or 403."""
    if original_method is None or original_uri is None:
        raise _refuse("the auth check needs X-Original-Method and X-Original-URI headers")
    method = original_method.strip().upper()
    if method not in PULL_METHODS:
        raise _refuse("the auth check grants only GET and HEAD", method=original_method)
    path = decoded_path(original_uri)
    found = route_of(request, method, path)
    need = None if found is None else required(method, *found)
    if found is None or need is None or need.kind != "repository" or need.repository is None:
        raise _refuse(
            "the auth check grants only reads under /v1/repositories/{name}/", uri=original_uri
        )
    try:
        validate_params(found[1])
    except InvalidInput as exc:
        raise _refuse(f"X-Original-URI: {exc}", uri=original_uri) from None
    if not principal.can("pull", need.repository):
        needed = f"pull {need.repository!r}"
        if principal.is_anonymous:
            raise ErrorCode.UNAUTHORIZED.error(f"{needed} needs a token")
        raise _refuse(
            f"token {principal.name!r} may not {needed}", token=principal.name, needed=needed
        )
    return Response(status_code=204, headers={"Cache-Control": NO_STORE})
