"""Request ids, access logs, HTTP metrics and the last-resort 500, as one ASGI middleware.

Every response carries ``X-Request-Id``: the client's, when it sent a sane one, else a
fresh one, so a client error message and a server log line can be matched. Exceptions
nobody handled are logged with that id and answered as ``INTERNAL`` in the usual error
shape — Starlette's own last-resort handler sits outside user middleware and would send
neither the id nor our format. Those that say the index or the object store could not be
reached (SQLAlchemy's connection errors, the store's ``BackendError``) are answered
``503 UNAVAILABLE`` instead (transient: clients retry it). A client that hangs up
mid-request (Starlette's ``ClientDisconnect``) gets no answer and no error log: it is
logged at INFO and recorded with status 499.

Each request also gets one access log line (logger ``wreg_server.access``: method, route
template, status, duration) — at DEBUG for chunk transfers (a push or pull makes
thousands: ``CHUNK_ROUTES``) that succeeded, at INFO for everything else (a failed chunk
request included) — and is counted in the app's ``Metrics`` by route *template* as the
API spells it (``/v1/repositories/{name}/chunks/{digest}``: not the name or digest, so
label cardinality stays bounded, nor the router's ``{name:path}``; ``api_template``).
While the request runs, its id and metrics are in context variables, so any log line
written on its behalf carries the id (``logs.py``) and domain code can count into its
metrics.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wreg.core.errors import ErrorCode
from wreg_server import metrics as metrics_module
from wreg_server.api.errors import error_response
from wreg_server.logs import request_id_var
from wreg_server.metrics import UNMATCHED, Metrics
from wreg_server.objectstore import BackendError

log = logging.getLogger(__name__)
access_log = logging.getLogger("wreg_server.access")

HEADER: Final = "X-Request-Id"
# Recorded (access log, metrics) for a request whose client hung up first; nginx's code.
CLIENT_CLOSED: Final = 499
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Route templates (api/routes/chunks.py) whose access lines are DEBUG: one chunk's
# GET/HEAD/PUT and the batched fetch and upload. The per-push ``missing`` query stays INFO.
CHUNK_ROUTES: Final = frozenset(
    {
        "/v1/repositories/{name}/chunks/{digest}",
        "/v1/repositories/{name}/chunks/fetch",
        "/v1/repositories/{name}/chunks/upload",
        "/v1/chunks/{digest}",
    }
)
_CONVERTER: Final = re.compile(r"\{(\w+):\w+\}")


@functools.lru_cache(maxsize=512)  # one entry per route template: bounded
def api_template(route: str) -> str:
    """``route`` as the API and its OpenAPI schema spell it: the router's
    ``/v1/repositories/{name:path}/tags/{tag}`` is ``/v1/repositories/{name}/tags/{tag}``."""
    return _CONVERTER.sub(r"{\1}", route)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics if metrics is not None else Metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._choose_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False
        status = 500
        bytes_in = bytes_out = 0
        t0 = time.perf_counter()

        async def receive_counted() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started, status, bytes_out
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            elif message["type"] == "http.response.zerocopysend":  # api/hotpath.py
                bytes_out += int(message["count"])
            await send(message)

        id_token = request_id_var.set(request_id)
        metrics_token = metrics_module.bind(self.metrics)
        try:
            await self.app(scope, receive_counted, send_with_id)
        except ClientDisconnect:
            # The client hung up mid-request: nobody to answer, and not a server failure.
            status = CLIENT_CLOSED
            log.info(
                "request %s: client disconnected: %s %s",
                *(request_id, scope.get("method"), scope.get("path")),
            )
        except Exception as exc:
            backend = _unreachable_backend(exc)
            if backend is None:
                log.exception(
                    "request %s failed: %s %s", request_id, scope.get("method"), scope.get("path")
                )
            else:
                cause = exc.__cause__ if isinstance(exc, BackendError) and exc.__cause__ else exc
                log.error(
                    "request %s failed: %s %s: the %s is unavailable: %s: %s",
                    *(request_id, scope.get("method"), scope.get("path"), backend),
                    *(type(cause).__name__, exc),
                )
            if started:
                raise  # too late for an error response; the server drops the connection
            if backend is None:
                response = error_response(ErrorCode.INTERNAL, detail={"request_id": request_id})
            else:  # transient: 503, which clients retry, not a 500
                response = error_response(
                    ErrorCode.UNAVAILABLE,
                    f"the {backend} is unavailable; try again later",
                    detail={"request_id": request_id, "backend": backend},
                )
            await response(scope, receive, send_with_id)
        finally:
            self._record(scope, status, bytes_in, bytes_out, time.perf_counter() - t0)
            metrics_module.unbind(metrics_token)
            request_id_var.reset(id_token)

    def _record(
        self, scope: Scope, status: int, bytes_in: int, bytes_out: int, seconds: float
    ) -> None:
        method = str(scope.get("method", ""))
        route = api_template(getattr(scope.get("route"), "path", None) or UNMATCHED)
        m = self.metrics
        m.requests.labels(method, route, str(status)).inc()
        m.duration.labels(method, route).observe(seconds)
        m.bytes_in.labels(route).inc(bytes_in)
        m.bytes_out.labels(route).inc(bytes_out)
        quiet = route in CHUNK_ROUTES and status < 400
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %d",
            method,
            scope.get("path", ""),
            status,
            extra={
                "method": method,
                "route": route,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
            },
        )

    @staticmethod
    def _choose_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SANE_ID.fullmatch(candidate):
                    return candidate
                break
        return uuid.uuid4().hex


def _unreachable_backend(exc: BaseException) -> str | None:
    """``"index"`` or ``"object store"`` when ``exc`` says that backend could not be
    reached or dropped the connection (a 503 the client may retry), else None (a bug: 500).

    The object store raises every failure of its backend as ``BackendError``
    (``objectstore/base.py``). The index's surface as SQLAlchemy's connection-level
    errors, as asyncpg's own errors where SQLAlchemy does not wrap them, and as ``OSError``
    (asyncpg's connect) — as does a file-store object the chunk route reads straight from
    disk, hence the vaguer name for a bare ``OSError``.
    """
    from sqlalchemy import exc as sa

    if isinstance(exc, BackendError):
        return "object store"
    package = type(exc).__module__.partition(".")[0]
    if package == "asyncpg" or isinstance(
        exc, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError)
    ):
        return "index"
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return "index"
    if isinstance(exc, OSError):
        return "index or object store"
    return None
