"""The one dependency every API route runs first: validate path parameters, authenticate,
authorize. Applied app-wide (``FastAPI(dependencies=[Depends(guard)])``), so route
modules never check tokens themselves and a new route is covered the day it is added.

What a request needs is derived from its method and route template:

    /healthz, /readyz, /metrics                  open (so are /docs, /openapi.json)
    /ui, /ui/...                                 open here: the UI checks its cookie itself
    /v1/repositories/{name}/...                  GET/HEAD: pull on name; else: push on name
      (manifests, tags, GET .../inspect/{reference}, and chunks: .../chunks/{digest},
      POST .../chunks/missing, POST .../chunks/upload)
    POST /v1/repositories/{name}/chunks/fetch    pull on name (a batched GET: a read
      whose digest list is too long for a URL, so it travels in a POST body)
    /v1/repositories/{name}/retention[/plan]     admin on name (any method)
    GET /v1/repositories                         any caller; lists what it may pull
    GET/HEAD /v1/chunks/{digest}                 pull on some repository (or anonymous)
    PUT /v1/chunks/{digest}, POST .../missing    push on some repository
      (the global chunk routes exist only under WREG_CHUNK_NAMESPACE=global)
    GET /v1/tokens/self                          any caller (who am I)
    GET/HEAD /v1/auth/check                      any caller (it judges another request)
    POST /api/repos/create, /api/validate-yaml   any caller (create checks push on the name)
    PUT /api/lfs/{repo_id}/{oid}                 a signed URL (auth/signed.py), no token
    HF API routes ({repo_id} in the path, hf/)   GET/HEAD and POST .../paths-info/...: pull
      on the repository the id maps to (``wreg.core.hf.name_of``); other POSTs: push
    /v1/tokens...                                admin on *
    anything else                                admin on * (fail closed)

Through a repository, a chunk route needs the action on that repository; which chunks
it may then see is ``domain/access.py``'s business. The global chunk routes need the
action on *some* repository (README, "Security model"). Without a token: 401 ``UNAUTHORIZED`` with
``WWW-Authenticate: Bearer``, unless anonymous pull is on and the request only pulls; with
a token lacking the scope: 403 ``DENIED``.

Path parameters (name, digest, tag, reference, token name) are validated here and only
here (``PATH_VALIDATORS``), after the token is checked and before its scopes are matched
against them: routes and the domain take them as valid, so each is validated once per
request, and a route whose parameter has no validator fails closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from fastapi import Depends, Request

from wreg.core import hf
from wreg.core.digest import PREFIX, validate_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.reference import validate_name, validate_tag
from wreg_server.auth import signed, tokens
from wreg_server.auth.scopes import Action, Principal, Scope
from wreg_server.context import AppContext, get_context

log = logging.getLogger(__name__)

OPEN_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics"})
# The web UI (wreg_server/ui): read-only pages that authenticate with their own cookie
# through ``principal_of`` and filter what they show; the cookie is never read here, so
# it has no power on the API.
UI_PREFIX: Final = "/ui"
PULL_METHODS: Final = frozenset({"GET", "HEAD"})
# POSTs that only read: the batched chunk download (``api/routes/chunks.py``).
READ_POSTS: Final = frozenset(
    {
        "/v1/repositories/{name}/chunks/fetch",
        "/api/models/{repo_id}/paths-info/{revision}",
    }
)
# Any valid token (or anonymous, if allowed): who am I; may this token read that URI.
# The HF API's repository creation checks push on the name in its body itself
# (hf/uploads.py); its model card check reads nothing.
CALLER_ROUTES: Final = frozenset(
    {"/v1/tokens/self", "/v1/auth/check", "/api/repos/create", "/api/validate-yaml"}
)

# Routes authorized by a signed URL instead of a token (``auth/signed.py``): the HF API's
# LFS upload, whose client sends no Authorization header.
SIGNED_ROUTES: Final = frozenset({"/api/lfs/{repo_id}/{oid}"})

# Repository routes that need admin on the repository whatever the method: a retention
# policy deletes manifests (``api/routes/retention.py``). Their own kind, so that the
# auth check (``api/routes/authcheck.py``), which grants repository reads, refuses them.
ADMIN_ROUTES: Final = frozenset(
    {"/v1/repositories/{name}/retention", "/v1/repositories/{name}/retention/plan"}
)

Kind = Literal[
    "open", "caller", "listing", "repository", "repository_admin", "chunks", "manage", "signed"
]


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs: ``kind`` of check, the action, and the repository if any."""

    kind: Kind
    action: Action = "admin"
    repository: str | None = None


def required(method: str, route: str, params: dict[str, str]) -> Need:
    """The access a request needs, from its method, route template and path parameters."""
    method = method.upper()
    reads = method in PULL_METHODS or (method == "POST" and route in READ_POSTS)
    action: Action = "pull" if reads else "push"
    if route in OPEN_ROUTES or route == UI_PREFIX or route.startswith(UI_PREFIX + "/"):
        return Need("open")
    if route in CALLER_ROUTES:
        return Need("caller")
    if route == "/v1/repositories" and action == "pull":
        return Need("listing", "pull")
    if route in ADMIN_ROUTES and "name" in params:
        return Need("repository_admin", "admin", params["name"])
    if route.startswith("/v1/repositories/") and "name" in params:
        return Need("repository", action, params["name"])
    if route.startswith("/v1/chunks/"):
        return Need("chunks", action)
    if route in SIGNED_ROUTES and method == "PUT":
        return Need("signed", "push", hf.name_of(params.get("repo_id", "")) or "")
    if "repo_id" in params:  # the HF API: an id no wreg name matches is no repository
        return Need("repository", action, hf.name_of(params["repo_id"]) or "")
    return Need("manage")


def validate_reference(reference: str) -> str:
    """A manifest reference in a URL: a digest (``blake3:…``) or else a tag."""
    if reference.startswith(PREFIX):
        return validate_digest(reference)
    return validate_tag(reference)


# Every path parameter a route may declare, with its validator, in the order they are
# checked (name first: an invalid name is reported before anything else about it).
PATH_VALIDATORS: Final[dict[str, Callable[[str], str]]] = {
    "name": validate_name,
    "digest": validate_digest,
    "tag": validate_tag,
    "reference": validate_reference,
    "token_name": tokens.validate_name,
    "repo_id": hf.validate_repo_id,
    "revision": hf.validate_revision,
    "path": hf.validate_path_param,
    "oid": hf.validate_sha256,
}
PATH_PARAMETERS: Final = frozenset(PATH_VALIDATORS)


def validate_params(params: dict[str, str]) -> None:
    """Validate every path parameter: the one place they are validated (module docstring)."""
    unknown = set(params) - PATH_PARAMETERS
    if unknown:  # a route with a parameter nobody validates: a server bug, fail closed
        raise RuntimeError(f"path parameters without a validator: {sorted(unknown)}")
    for param, validate in PATH_VALIDATORS.items():
        if param in params:
            validate(params[param])


class TokenCache:
    """Verified tokens (by hash) for ``ttl`` seconds, so a pull's thousands of chunk GETs
    cost one index lookup per token per ``ttl`` rather than one each. A revocation made
    elsewhere takes effect here within ``ttl``; one made through this process at once."""

    MAX_ENTRIES: Final = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        self._entries.clear()


def token_cache(request: Request) -> TokenCache:
    """The app's cache (created on first use, with the app's settings' TTL)."""
    state = request.app.state
    cache = getattr(state, "token_cache", None)
    if cache is None:
        cache = TokenCache(get_context(request).settings.auth_cache_seconds)
        state.token_cache = cache
    assert isinstance(cache, TokenCache)  # noqa: S101 - narrows app.state (set just above)
    return cache


def _unauthorized(message: str, invalid_token: bool = False) -> WregError:
    return ErrorCode.UNAUTHORIZED.error(
        message, detail={"invalid_token": True} if invalid_token else None
    )


async def authenticate(request: Request, context: AppContext) -> Principal:
    """The principal the request's bearer token names; anonymous or 401 without one."""
    header = request.headers.get("authorization")
    if header is None:
        if context.settings.anonymous_pull:
            return Principal.anonymous()
        raise _unauthorized("this registry requires a token: run `wreg login` or set WREG_TOKEN")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", True)
    principal = await principal_of(request, context, value)
    if principal is None:
        raise _unauthorized("the token is unknown or revoked", True)
    return principal


async def principal_of(request: Request, context: AppContext, token: str) -> Principal | None:
    """The principal ``token`` names (through the cache), or None if unknown or revoked.

    Shared by ``authenticate`` and the web UI, which reads the token from its cookie."""
    token_hash = tokens.hash_token(token)
    cache = token_cache(request)
    principal = cache.get(token_hash)
    if principal is not None:
        return principal
    async with context.sessions() as session:
        info = await tokens.verify(session, token)
    if info is None:
        return None
    principal = Principal(info.name, info.scopes)
    cache.put(token_hash, principal)
    return principal


def _denied(principal: Principal, needed: str) -> WregError:
    if principal.is_anonymous:
        return _unauthorized(f"{needed} needs a token: run `wreg login` or set WREG_TOKEN")
    return ErrorCode.DENIED.error(
        f"token {principal.name!r} may not {needed}",
        detail={"token": principal.name, "needed": needed},
    )


async def guard(request: Request) -> None:
    """Validate path parameters, then authenticate and authorize (see module docstring).

    Stores the principal in ``request.state.principal`` for routes that filter by it.
    """
    route = request.scope.get("route")
    template = str(getattr(route, "path_format", None) or request.url.path)
    params = {k: str(v) for k, v in request.path_params.items()}
    need = required(request.method, template, params)
    if need.kind == "open":
        return
    context = get_context(request)
    if need.kind == "signed":  # the URL is the credential, for one upload (auth/signed.py)
        validate_params(params)
        signed.check(
            context.settings.hf_upload_secret,
            request.url.path,
            dict(request.query_params),
        )
        request.state.principal = Principal(None, (Scope("push", need.repository or ""),))
        return
    if context.settings.auth_enabled:
        principal = await authenticate(request, context)
    else:
        principal = Principal.unrestricted()
    validate_params(params)
    request.state.principal = principal
    if need.kind in ("caller", "listing"):
        return
    if need.kind in ("repository", "repository_admin"):
        assert need.repository is not None  # noqa: S101 - narrows: required() always sets it
        if not principal.can(need.action, need.repository):
            raise _denied(principal, f"{need.action} {need.repository!r}")
    elif need.kind == "chunks":
        if not principal.can_any(need.action):
            raise _denied(principal, f"{need.action} chunks (needs {need.action} on a repository)")
    elif not principal.can_manage_tokens():
        raise _denied(principal, "manage tokens (needs admin:*)")


def get_principal(request: Request) -> Principal:
    """The principal ``guard`` stored; a route reached without ``guard`` is a server bug."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError("route reached without the auth guard")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
