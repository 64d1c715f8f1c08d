"""Errors as huggingface_hub reads them: a status, ``X-Error-Code``, ``X-Error-Message``.

huggingface_hub turns ``X-Error-Code`` into its own exceptions (``RepositoryNotFoundError``,
``RevisionNotFoundError``, ``EntryNotFoundError``), so a client sees the error it would
see from the Hub. A repository the caller may not read is answered exactly like one that
does not exist (401 without a token, 404 with one), so a token never learns which other
teams' repositories exist. A missing entry carries the commit it is missing from
(``X-Repo-Commit``), which lets the client cache the absence.

Routes raise ``HfError``; the guard's and the domain's ``WregError`` s are translated by
``HfRoute``, the route class of every HF route, before the app's wreg error envelope
would see them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wreg.core.errors import ErrorCode, WregError

REPO_NOT_FOUND: Final = "RepoNotFound"
REVISION_NOT_FOUND: Final = "RevisionNotFound"
ENTRY_NOT_FOUND: Final = "EntryNotFound"
COMMIT_HEADER: Final = "X-Repo-Commit"


class HfError(Exception):
    """An error for an HF client: HTTP status, ``X-Error-Code`` (or None) and message."""

    def __init__(
        self, status: int, code: str | None, message: str, *, commit: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.commit = commit

    def response(self, head: bool = False) -> Response:
        headers = {"X-Error-Message": _header_safe(self.message)}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        if self.commit is not None:
            headers[COMMIT_HEADER] = self.commit
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="wreg"'
        if head:
            return Response(status_code=self.status, headers=headers)
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def _header_safe(message: str) -> str:
    return message.encode("ascii", "replace").decode()[:512].replace("\r", " ").replace("\n", " ")


def repo_not_found(repo_id: str, *, anonymous: bool = False) -> HfError:
    return HfError(
        401 if anonymous else 404,
        REPO_NOT_FOUND,
        f"Repository Not Found for url: {repo_id}. Make sure the repository exists and "
        "your token (HF_TOKEN) may pull it.",
    )


def revision_not_found(repo_id: str, revision: str) -> HfError:
    return HfError(404, REVISION_NOT_FOUND, f"Invalid rev id: {revision} for {repo_id}")


def entry_not_found(repo_id: str, path: str, commit: str) -> HfError:
    return HfError(404, ENTRY_NOT_FOUND, f"Entry not found: {path} in {repo_id}", commit=commit)


def from_wreg(exc: WregError, repo_id: str | None) -> HfError:
    """The HF form of an error the guard or the domain raised."""
    anonymous = exc.code is ErrorCode.UNAUTHORIZED
    if repo_id is not None and exc.code in (
        ErrorCode.UNAUTHORIZED,
        ErrorCode.DENIED,
        ErrorCode.NAME_INVALID,
        ErrorCode.NAME_UNKNOWN,
    ):
        return repo_not_found(repo_id, anonymous=anonymous)
    status = exc.code.status or 500
    return HfError(status, None, exc.message)


class HfRoute(APIRoute):
    """The route class of the HF API: every error leaves it in the HF form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            head = request.method == "HEAD"
            try:
                return await handler(request)
            except HfError as exc:
                return exc.response(head)
            except WregError as exc:
                repo_id = request.path_params.get("repo_id")
                return from_wreg(exc, repo_id if isinstance(repo_id, str) else None).response(head)
            except RequestValidationError as exc:
                detail: Any = [str(e.get("msg", "")) for e in exc.errors()]
                return HfError(400, None, f"request is malformed: {detail}").response(head)

        return route
