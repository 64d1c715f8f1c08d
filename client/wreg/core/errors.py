"""Error codes shared by server and client, and the client-side exception root.

One table (``ErrorCode``) names every failure the registry can report, with its HTTP
status and a default message, like the OCI distribution spec's errcode register.
The server answers ``{"errors": [{"code", "message", "detail"}]}``; the client turns
that back into a ``WregError`` carrying the same code.

Exception hierarchy::

    WregError                      every error wreg raises on purpose
    ├── InvalidInput               bad reference, digest, path, manifest... (never retried)
    ├── IntegrityError             bytes do not match their digest (never retried)
    ├── NotFound                   unknown repository, tag, manifest or chunk
    ├── AuthError                  no valid token (401), or it lacks the scope (403)
    ├── RegistryError              the server answered with an error code
    └── TransportError             the server could not be reached / connection dropped
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """Every API error: (HTTP status, default message)."""

    DIGEST_INVALID = (400, "digest is not of the form blake3:<64 lowercase hex>")
    DIGEST_MISMATCH = (400, "content does not match its digest")
    CHUNK_INVALID = (400, "chunk encoding is invalid")
    CHUNK_UNKNOWN = (404, "chunk unknown to the registry")
    CHUNK_TOO_LARGE = (413, "chunk exceeds the size limit")
    MANIFEST_INVALID = (400, "manifest is invalid")
    MANIFEST_CHUNKS_MISSING = (400, "manifest references chunks the registry lacks")
    MANIFEST_UNKNOWN = (404, "manifest unknown")
    MANIFEST_TOO_LARGE = (413, "manifest exceeds the size limit")
    PATH_UNSAFE = (400, "manifest contains an unsafe path")
    NAME_INVALID = (400, "invalid repository name")
    TAG_INVALID = (400, "invalid tag")
    REFERENCE_INVALID = (400, "invalid reference")
    NAME_UNKNOWN = (404, "repository unknown")
    TAG_UNKNOWN = (404, "tag unknown")
    TAG_CONFLICT = (412, "tag does not point at the manifest the request expected")
    BODY_INVALID = (400, "request body is malformed")
    BODY_TOO_LARGE = (413, "request body exceeds the size limit")
    REQUEST_TIMEOUT = (408, "request body arrived too slowly")
    UNAUTHORIZED = (401, "authentication required: no valid bearer token")
    DENIED = (403, "the token lacks the scope this request needs")
    TOKEN_INVALID = (400, "invalid token name or scope")
    TOKEN_EXISTS = (409, "a token with this name exists")
    TOKEN_UNKNOWN = (404, "token unknown")
    NOT_FOUND = (404, "no such endpoint")
    METHOD_NOT_ALLOWED = (405, "method not allowed")
    UNAVAILABLE = (503, "a backend is unavailable")
    INTERNAL = (500, "internal error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


class WregError(Exception):
    """Root of every error wreg raises on purpose; ``code`` is an ``ErrorCode`` name."""

    code: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail
        self.request_id = request_id

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}

    def __str__(self) -> str:
        suffix = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.message}{suffix}"


class InvalidInput(WregError):
    """The caller gave something malformed; retrying cannot help."""

    code = "BODY_INVALID"


class IntegrityError(WregError):
    """Bytes do not match their digest; permanent, never retried."""

    code = "DIGEST_MISMATCH"


class NotFound(WregError):
    """A repository, tag, manifest or chunk does not exist."""

    code = "NOT_FOUND"


class AuthError(WregError):
    """No valid token (``UNAUTHORIZED``) or a token without the needed scope (``DENIED``)."""

    code = "UNAUTHORIZED"


class RegistryError(WregError):
    """The registry answered with an error that has no more specific class."""


class TransportError(WregError):
    """The registry could not be reached or the connection broke; may be retried."""

    code = "UNAVAILABLE"


def error_class_for(code: str) -> type[WregError]:
    """Map an API error code to the exception class the client raises."""
    if code in {"DIGEST_MISMATCH"}:
        return IntegrityError
    if code.endswith("_UNKNOWN") or code == "NOT_FOUND":
        return NotFound
    if code in {"UNAVAILABLE"}:
        return TransportError
    if code in {"UNAUTHORIZED", "DENIED"}:
        return AuthError
    try:
        status = ErrorCode[code].status
    except KeyError:
        return RegistryError
    return InvalidInput if 400 <= status < 500 else RegistryError
