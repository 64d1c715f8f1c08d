"""The chunk download hot path: ``GET`` of one chunk, without FastAPI's per-request cost.

A pull is thousands of chunk GETs, so what each costs the server beyond its bytes decides
the server's CPU per GB. ``ChunkDownloads`` is a plain ASGI middleware, inside
``RequestContextMiddleware`` (request id, access log, metrics, the 503/500 envelope all
still apply) and in front of the FastAPI router. It answers a chunk download itself when
it can prove the answer is the one the full route would give, and hands every other
request on untouched:

* the route is ``/v1/repositories/{name}/chunks/{digest}`` (or ``/v1/chunks/{digest}``
  under ``WREG_CHUNK_NAMESPACE=global``) with a valid name and digest;
* the caller is known without the index: auth off, anonymous pull, or a bearer token in
  the guard's ``TokenCache`` (``auth/guard.py``) whose scopes allow the pull;
* the chunk is readable through the repository without a query: global namespace, or
  the repository's digest set (``domain/access.py``'s ``RepositoryChunks``) is loaded,
  fresh and holds it;
* no ``If-None-Match`` or ``Range`` header (the full route answers those), and the store
  keeps the object as a local file (the file store) that exists.

Everything else — an unknown or new token, a digest the set does not hold yet, a 304, an
S3 store, a missing file, every error — takes the full route, which answers exactly as
before and warms the caches the next request uses here. So this path changes no answer;
it only skips the dependency injection, routing and body copies for the common case.

The body goes out the cheapest way the ASGI server offers: the ``http.response.
zerocopysend`` extension (``wreg-server serve``'s protocol, ``serving.py``: ``sendfile``
from the page cache to the socket, in a worker thread), ``http.response.pathsend``
(granian), or else one read of the file in a worker thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from wreg.core.errors import WregError
from wreg.core.mediatypes import CHUNK_MEDIA_TYPE
from wreg.core.reference import validate_name
from wreg_server import metrics
from wreg_server.api.caching import immutable
from wreg_server.auth import tokens
from wreg_server.auth.guard import TokenCache
from wreg_server.auth.scopes import Principal
from wreg_server.context import AppContext
from wreg_server.domain.access import RepositoryChunks
from wreg_server.domain.layout import chunk_key

ZEROCOPY: Final = "http.response.zerocopysend"
PATHSEND: Final = "http.response.pathsend"
_THROUGH: Final = re.compile(r"/v1/repositories/(.+)/chunks/(blake3:[0-9a-f]{64})")
_GLOBAL: Final = re.compile(r"/v1/chunks/(blake3:[0-9a-f]{64})")
# The route templates the metrics and access log name (those of api/routes/chunks.py).
THROUGH_TEMPLATE: Final = "/v1/repositories/{name:path}/chunks/{digest}"
GLOBAL_TEMPLATE: Final = "/v1/chunks/{digest}"


@dataclass(frozen=True, slots=True)
class _Route:
    """What ``RequestContextMiddleware`` reads of ``scope["route"]``: the template."""

    path: str


_THROUGH_ROUTE: Final = _Route(THROUGH_TEMPLATE)
_GLOBAL_ROUTE: Final = _Route(GLOBAL_TEMPLATE)


class ChunkDownloads:
    """ASGI middleware: serve chunk downloads the full route would serve (module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and "/chunks/blake3:" in scope["path"]
            and await self._serve(scope, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, send: Send) -> bool:
        """Answer the download and return True, or return False having sent nothing."""
        state = scope["app"].state
        context = getattr(state, "context", None)
        if not isinstance(context, AppContext):
            return False
        settings = context.settings
        path: str = scope["path"]
        name: str | None = None
        match = _THROUGH.fullmatch(path)
        if match is not None:
            name, digest = match.group(1), match.group(2)
            try:
                validate_name(name)
            except WregError:
                return False
            route = _THROUGH_ROUTE
        elif settings.chunk_namespace == "global" and (match := _GLOBAL.fullmatch(path)):
            digest, route = match.group(1), _GLOBAL_ROUTE
        else:
            return False
        authorization: bytes | None = None
        for header, value in scope["headers"]:
            if header in (b"if-none-match", b"range"):
                return False
            if header == b"authorization":
                authorization = value
        principal = _principal(state, context, authorization)
        if principal is None:
            return False
        if name is not None:
            if not principal.can("pull", name):
                return False
            if settings.chunk_namespace != "global":
                sets = state.repository_chunks
                if not isinstance(sets, RepositoryChunks) or not sets.holds(name, digest):
                    return False
        elif not principal.can_any("pull"):
            return False
        local = context.store.local_path(chunk_key(digest))
        if local is None:
            return False
        try:
            fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb", buffering=0) as file:
            size = os.fstat(fd).st_size
            scope["route"] = route
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", CHUNK_MEDIA_TYPE.encode()),
                        (b"content-length", str(size).encode()),
                        (b"cache-control", immutable(settings).encode()),
                        (b"etag", f'"{digest}"'.encode()),
                    ],
                }
            )
            extensions = scope.get("extensions") or {}
            if ZEROCOPY in extensions:
                how = "zerocopy"
                await send({"type": ZEROCOPY, "file": file, "count": size})
            elif PATHSEND in extensions:
                how = "pathsend"
                await send({"type": PATHSEND, "path": str(local)})
            else:
                how = "read"
                body = await to_thread.run_sync(os.pread, fd, size, 0)
                await send({"type": "http.response.body", "body": body})
        metrics.current().downloads.labels(how).inc()
        return True


def _principal(state: object, context: AppContext, authorization: bytes | None) -> Principal | None:
    """The caller, if known without the index (else None: the guard's full path decides)."""
    settings = context.settings
    if not settings.auth_enabled:
        return Principal.unrestricted()
    if authorization is None:
        return Principal.anonymous() if settings.anonymous_pull else None
    scheme, _, value = authorization.decode("latin-1").partition(" ")
    value = value.strip()
    cache = getattr(state, "token_cache", None)
    if scheme.lower() != "bearer" or not value or not isinstance(cache, TokenCache):
        return None
    return cache.get(tokens.hash_token(value))
