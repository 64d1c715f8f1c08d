"""Every error the API sends, in one shape: ``{"errors": [{"code", "message", "detail"}]}``.

Translation happens here and only here: domain code raises ``WregError`` with an
``ErrorCode`` name and the HTTP status comes from that table; framework errors (unknown
route, wrong method, unparsable parameters) are mapped onto the same codes. Unexpected
exceptions become ``INTERNAL`` in ``RequestContextMiddleware`` (``middleware.py``), which
sits outside these handlers so a 500 still carries the request id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from wreg.core.errors import ErrorCode, WregError

log = logging.getLogger(__name__)

# HTTP statuses the framework raises on its own, and the code each becomes.
_HTTP_CODES = {
    400: ErrorCode.BODY_INVALID,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
    503: ErrorCode.UNAVAILABLE,
}


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


def error_response(
    code: ErrorCode, message: str | None = None, detail: Any = None, status: int | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(code.name, message or code.message, detail),
        status_code=status or _status_of(code),
    )


def _status_of(code: ErrorCode) -> int:
    """The HTTP status of ``code``; a local (client-only) code raised here is a bug."""
    if code.status is None:
        log.error("client-only error code %s raised in the server", code.name)
        return 500
    return code.status


async def handle_wreg_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WregError)  # noqa: S101 - narrows: installed for this type only
    code = exc.code
    if code.local:  # a client-only code raised in the server is a bug, not a client error
        log.error("client-only error code %s raised: %s", code.name, exc.message)
        code = ErrorCode.INTERNAL
    status = _status_of(code)
    if status >= 500:
        log.error("%s %s failed: %s %s", request.method, request.url.path, code.name, exc.message)
    response = JSONResponse(error_body(code.name, exc.message, exc.detail), status_code=status)
    if code is ErrorCode.UNAUTHORIZED:  # RFC 6750 §3: say which scheme would work
        invalid = isinstance(exc.detail, dict) and exc.detail.get("invalid_token")
        challenge = 'Bearer realm="wreg"' + (', error="invalid_token"' if invalid else "")
        response.headers["WWW-Authenticate"] = challenge
    return response


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - narrows (installed for it)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    return error_response(ErrorCode.BODY_INVALID, "request is malformed", detail)


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101 - narrows: installed for this type only
    code = _HTTP_CODES.get(exc.status_code)
    if code is None:
        code = ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.BODY_INVALID
    message = code.message
    if code is ErrorCode.NOT_FOUND:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif code is ErrorCode.METHOD_NOT_ALLOWED:
        message = f"method {request.method} not allowed on {request.url.path}"
    response = error_response(code, message, status=exc.status_code)
    response.headers.update(exc.headers or {})
    if code is ErrorCode.METHOD_NOT_ALLOWED:
        allowed = _allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (RFC 9110 §15.5.6).

    Starlette's own 405 names only the first route that matched the path, and several
    of ours share a path pattern (one route per method and resource), so ask the router
    about each method in turn.
    """
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(WregError, handle_wreg_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
