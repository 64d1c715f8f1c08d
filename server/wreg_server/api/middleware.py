"""Request ids and the last-resort 500, as one plain ASGI middleware.

Every response carries ``X-Request-Id``: the client's, when it sent a sane one, else a
fresh one, so a client error message and a server log line can be matched. Exceptions
nobody handled are logged with that id and answered as ``INTERNAL`` in the usual error
shape — Starlette's own last-resort handler sits outside user middleware and would send
neither the id nor our format.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wreg.core.errors import ErrorCode
from wreg_server.api.errors import error_response

log = logging.getLogger(__name__)

HEADER: Final = "X-Request-Id"
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._choose_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "request %s failed: %s %s", request_id, scope.get("method"), scope.get("path")
            )
            if started:
                raise  # too late for an error response; the server drops the connection
            response = error_response(ErrorCode.INTERNAL, detail={"request_id": request_id})
            await response(scope, receive, send_with_id)

    @staticmethod
    def _choose_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SANE_ID.fullmatch(candidate):
                    return candidate
                break
        return uuid.uuid4().hex
