"""Reading request bodies with a hard size cap.

The body is streamed and reading stops as soon as it passes the limit, so a client
cannot make the server buffer more than ``limit`` bytes whatever ``Content-Length`` says
(a declared length over the limit is refused before reading anything; a missing or
lying one is caught while streaming). Each piece must arrive within the app's
``body_timeout`` of the last, and the whole body must average ``body_min_rate`` bytes/s
after a head start of ``body_timeout`` (Apache's ``mod_reqtimeout`` rule: each
``body_min_rate`` bytes received buy one more second), so a client trickling a body cannot
hold a connection and its buffer indefinitely, whether it pauses or just sends a byte a
second (408 ``REQUEST_TIMEOUT``); an honest body at least that fast passes whatever its
size. uvicorn hands the body over in socket-read-sized pieces and stops reading the socket
while ~64 KiB sit unconsumed (flow control), so what one request holds is bounded by
``limit`` plus one piece.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from wreg.core.errors import ErrorCode, WregError

M = TypeVar("M", bound=BaseModel)


def _too_large(limit: int, code: ErrorCode) -> WregError:
    return code.error(f"request body exceeds the limit of {limit} bytes", detail={"limit": limit})


async def read_limited(
    request: Request, limit: int, code: ErrorCode = ErrorCode.BODY_TOO_LARGE
) -> bytes:
    """The whole body, or ``InvalidInput(code)`` (a 413 code) once it passes ``limit``."""
    return b"".join([part async for part in iter_limited(request, limit, code)])


async def iter_limited(
    request: Request, limit: int, code: ErrorCode = ErrorCode.BODY_TOO_LARGE
) -> AsyncIterator[bytes]:
    """The body piece by piece under ``read_limited``'s rules (for bodies spooled to disk
    rather than held: the cap and the deadlines are the same)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, code)
    idle = _body_timeout(request)
    min_rate = float(getattr(_settings(request), "body_min_rate", 0.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    stream = request.stream().__aiter__()
    while True:
        wait = idle
        if min_rate > 0:  # the rate deadline: idle's head start, plus 1 s per min_rate bytes
            wait = min(idle, started + idle + received / min_rate - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                part = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if wait < idle:
                elapsed = loop.time() - started
                raise ErrorCode.REQUEST_TIMEOUT.error(
                    f"request body arrived too slowly: {received} bytes in {elapsed:.0f} s, "
                    f"under the minimum of {min_rate:g} bytes/s",
                    detail={
                        "received": received,
                        "elapsed_s": round(elapsed, 3),
                        "min_rate": min_rate,
                    },
                ) from None
            raise ErrorCode.REQUEST_TIMEOUT.error(
                f"request body stalled: nothing received for {idle:g} s",
                detail={"received": received, "timeout_s": idle},
            ) from None
        received += len(part)
        if received > limit:
            raise _too_large(limit, code)
        yield part


def _settings(request: Request) -> object:
    context = getattr(request.app.state, "context", None)
    return getattr(context, "settings", None)


def _body_timeout(request: Request) -> float:
    return float(getattr(_settings(request), "body_timeout", 60.0))


async def read_json(request: Request, model: type[M], limit: int) -> M:
    """Parse a capped JSON body into ``model``; malformed input is ``BODY_INVALID``, and
    so is nesting too deep for the parser (``RecursionError``, linear to reach)."""
    raw = await read_limited(request, limit)
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ErrorCode.BODY_INVALID.error(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's answer to [[[[…]]]]: the client's fault, not a 500
        raise ErrorCode.BODY_INVALID.error(
            "request body nests arrays or objects too deeply"
        ) from None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ErrorCode.BODY_INVALID.error(
            "request body does not match the expected schema", detail=detail
        ) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route reads by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def openapi_binary(media_type: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a raw binary body."""
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
