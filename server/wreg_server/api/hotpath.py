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

``POST .../chunks/fetch`` (a batch) is answered the same way when every chunk of it
passes those checks: the frames' headers as small bodies, each chunk's file with
``sendfile``, so a client may batch large chunks ("runs") at no extra cost to the
server; the answer carries ``x-wreg-large-batches: yes`` (``WREG_LARGE_BATCHES``) to
say so. The body the hot path read is handed on to the full route when it declines.

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

import json
import os
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wreg.core.batch import FRAME_HEADER_SIZE, frame_header
from wreg.core.errors import WregError
from wreg.core.mediatypes import CHUNK_FRAMES_MEDIA_TYPE, CHUNK_MEDIA_TYPE, LARGE_BATCHES_HEADER
from wreg.core.reference import validate_name
from wreg_server import metrics
from wreg_server.api.caching import NO_STORE, immutable
from wreg_server.auth import tokens
from wreg_server.auth.guard import TokenCache
from wreg_server.auth.scopes import Principal
from wreg_server.context import AppContext
from wreg_server.domain.access import RepositoryChunks
from wreg_server.domain.layout import chunk_key

ZEROCOPY: Final = "http.response.zerocopysend"
PATHSEND: Final = "http.response.pathsend"
_THROUGH: Final = re.compile(r"/v1/repositories/(.+)/chunks/(blake3:[0-9a-f]{64})")
_FETCH: Final = re.compile(r"/v1/repositories/(.+)/chunks/fetch")
_DIGEST: Final = re.compile(r"blake3:[0-9a-f]{64}")
FETCH_TEMPLATE: Final = "/v1/repositories/{name:path}/chunks/fetch"
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
_FETCH_ROUTE: Final = _Route(FETCH_TEMPLATE)


class ChunkDownloads:
    """ASGI middleware: serve chunk downloads the full route would serve (module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if (
                scope["method"] == "GET"
                and "/chunks/blake3:" in scope["path"]
                and await self._serve(scope, send)
            ):
                return
            if scope["method"] == "POST" and scope["path"].endswith("/chunks/fetch"):
                received: list[Message] = []
                if await self._serve_batch(scope, receive, send, received):
                    return
                receive = _replay(received, receive)
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
            if not principal.can("pull", name) or not _readable(state, context, name, [digest]):
                return False
        elif not principal.can_any("pull"):
            return False
        opened = _open_chunk(context, digest)
        if opened is None:
            return False
        with opened as file:
            fd = file.fileno()
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
                await send(
                    {"type": PATHSEND, "path": str(context.store.local_path(chunk_key(digest)))}
                )
            else:
                how = "read"
                body = await to_thread.run_sync(os.pread, fd, size, 0)
                await send({"type": "http.response.body", "body": body})
        metrics.current().downloads.labels(how).inc()
        return True

    async def _serve_batch(
        self, scope: Scope, receive: Receive, send: Send, received: list[Message]
    ) -> bool:
        """Answer ``POST .../chunks/fetch`` as the full route would (frames, in request
        order), each chunk's file sent with ``sendfile``; or return False having sent
        nothing (the body read so far is in ``received``, for the full route)."""
        state = scope["app"].state
        context = getattr(state, "context", None)
        if not isinstance(context, AppContext) or ZEROCOPY not in (scope.get("extensions") or {}):
            return False
        settings = context.settings
        match = _FETCH.fullmatch(scope["path"])
        if match is None:
            return False
        name = match.group(1)
        try:
            validate_name(name)
        except WregError:
            return False
        authorization = next((v for h, v in scope["headers"] if h == b"authorization"), None)
        principal = _principal(state, context, authorization)
        if principal is None or not principal.can("pull", name):
            return False
        body = await _read_body(receive, received, settings.max_json_body)
        digests = _digests(body, settings.max_batch_chunks)
        if digests is None:
            return False
        if not _readable(state, context, name, digests):
            return False
        files = []
        try:
            for digest in digests:
                opened = _open_chunk(context, digest)
                if opened is None:
                    return False
                files.append(opened)
            sizes = [os.fstat(f.fileno()).st_size for f in files]
            total = sum(sizes) + FRAME_HEADER_SIZE * len(sizes)
            if total > settings.max_batch_bytes:
                return False  # the full route's 413
            scope["route"] = _FETCH_ROUTE
            headers = [
                (b"content-type", CHUNK_FRAMES_MEDIA_TYPE.encode()),
                (b"content-length", str(total).encode()),
                (b"cache-control", NO_STORE.encode()),
            ]
            if settings.large_batches:
                headers.append((LARGE_BATCHES_HEADER.encode(), b"yes"))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i, (digest, file, size) in enumerate(zip(digests, files, sizes, strict=True)):
                header = frame_header(digest, size)
                await send({"type": "http.response.body", "body": header, "more_body": True})
                last = i == len(files) - 1
                await send({"type": ZEROCOPY, "file": file, "count": size, "more_body": not last})
        finally:
            for file in files:
                file.close()
        metrics.current().downloads.labels("zerocopy-batch").inc(len(digests))
        return True


def _readable(state: Any, context: AppContext, name: str, digests: list[str]) -> bool:
    """Whether every chunk of ``digests`` is readable through ``name``, known without a
    query: the global namespace, or the repository's loaded digest set holds it."""
    if context.settings.chunk_namespace == "global":
        return True
    sets = state.repository_chunks
    return isinstance(sets, RepositoryChunks) and all(sets.holds(name, d) for d in digests)


def _open_chunk(context: AppContext, digest: str) -> BinaryIO | None:
    """The chunk's file, opened, when the store keeps it as one (else None)."""
    local = context.store.local_path(chunk_key(digest))
    if local is None:
        return None
    try:
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return os.fdopen(fd, "rb", buffering=0)


async def _read_body(receive: Receive, received: list[Message], limit: int) -> bytes | None:
    """The request body, if it is at most ``limit`` bytes (else None, read no further);
    every message taken is kept in ``received``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _digests(body: bytes | None, most: int) -> list[str] | None:
    """The digests of a well-formed fetch request (``{"digests": [...]}``, valid digests,
    at most ``most``, at least one); None for anything the full route should judge."""
    if body is None:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or set(doc) != {"digests"}:
        return None
    digests = doc["digests"]
    if (
        not isinstance(digests, list)
        or not 0 < len(digests) <= most
        or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in digests)
    ):
        return None
    return digests


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands back the messages the hot path already took."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


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
