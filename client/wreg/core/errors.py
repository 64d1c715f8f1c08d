"""The error table shared by server and client, and the exception hierarchy.

One table (``ErrorCode``) names every failure wreg reports, like the OCI distribution
spec's errcode register: each member carries its HTTP status (``None`` for failures that
happen on the client and never cross the wire), a default message, a description for the
docs, and its ``ErrorKind``. The kind alone picks the exception class, on both sides, by
lookup: the server answers ``{"errors": [{"code", "message", "detail"}]}`` and the client
raises ``ErrorCode[code].error(...)``: the same class the server raised.

Exception hierarchy (one class per kind)::

    WregError                      every error wreg raises on purpose
    ├── InvalidInput               bad reference, digest, path, manifest... (never retried)
    ├── IntegrityError             bytes do not match their digest (never retried)
    ├── NotFound                   unknown repository, tag, manifest or chunk
    ├── AuthError                  no valid token (401), or it lacks the scope (403)
    ├── Conflict                   the state changed under the request (tag CAS, names)
    ├── TransportError             unreachable, too slow or overloaded; may be retried
    └── RegistryError              the registry failed (500) or answered nonsense

Raise with a code: ``raise ErrorCode.TAG_UNKNOWN.error("tag 'x' is unknown", detail=...)``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(Enum):
    """What a failure means to the caller; each kind has one exception class."""

    INVALID = "invalid input"
    INTEGRITY = "integrity"
    NOT_FOUND = "not found"
    AUTH = "auth"
    CONFLICT = "conflict"
    TRANSIENT = "transient"
    INTERNAL = "internal"

    @property
    def retryable(self) -> bool:
        return self is ErrorKind.TRANSIENT


_K = ErrorKind


class ErrorCode(Enum):
    """Every error wreg reports: (HTTP status or None if local, message, description, kind)."""

    # -- wire codes: the server sends these ---------------------------------------------
    DIGEST_INVALID = (
        400,
        "digest is not of the form blake3:<64 lowercase hex>",
        "A digest in the path, body or manifest is malformed.",
        _K.INVALID,
    )
    DIGEST_MISMATCH = (
        400,
        "content does not match its digest",
        "Uploaded or downloaded bytes hash to another digest than the one named.",
        _K.INTEGRITY,
    )
    CHUNK_INVALID = (
        400,
        "chunk encoding is invalid",
        "An encoded chunk has an unknown header, codec or transform, or a wrong length.",
        _K.INVALID,
    )
    CHUNK_UNKNOWN = (
        404,
        "chunk unknown to the registry",
        "No stored chunk has this digest.",
        _K.NOT_FOUND,
    )
    CHUNK_TOO_LARGE = (
        413,
        "chunk exceeds the size limit",
        "An encoded or decoded chunk is larger than the server accepts.",
        _K.INVALID,
    )
    MANIFEST_INVALID = (
        400,
        "manifest is invalid",
        "A manifest is not canonical JSON of the manifest schema.",
        _K.INVALID,
    )
    MANIFEST_CHUNKS_MISSING = (
        400,
        "manifest references chunks the registry lacks",
        "A manifest commit names chunks not stored yet; `detail.missing` lists them.",
        _K.INVALID,
    )
    MANIFEST_UNKNOWN = (
        404,
        "manifest unknown",
        "No manifest has this digest in this repository.",
        _K.NOT_FOUND,
    )
    MANIFEST_TOO_LARGE = (
        413,
        "manifest exceeds the size limit",
        "A manifest body is larger than `WREG_MAX_MANIFEST_BYTES`.",
        _K.INVALID,
    )
    PATH_UNSAFE = (
        400,
        "manifest contains an unsafe path",
        "A file path is absolute, climbs with `..`, repeats, or names a device.",
        _K.INVALID,
    )
    NAME_INVALID = (
        400,
        "invalid repository name",
        "A repository name is not lowercase `[a-z0-9._-]` segments.",
        _K.INVALID,
    )
    TAG_INVALID = (400, "invalid tag", "A tag is not `[A-Za-z0-9_][A-Za-z0-9._-]*`.", _K.INVALID)
    REFERENCE_INVALID = (
        400,
        "invalid reference",
        "A reference is not `NAME`, `NAME@TAG` or `NAME@blake3:<hex>`.",
        _K.INVALID,
    )
    NAME_UNKNOWN = (404, "repository unknown", "No repository has this name.", _K.NOT_FOUND)
    TAG_UNKNOWN = (404, "tag unknown", "The repository has no such tag.", _K.NOT_FOUND)
    TAG_CONFLICT = (
        412,
        "tag does not point at the manifest the request expected",
        "`If-Match` named another digest than the one the tag points at now.",
        _K.CONFLICT,
    )
    BODY_INVALID = (
        400,
        "request body is malformed",
        "A request body or parameter is not what the endpoint expects.",
        _K.INVALID,
    )
    BODY_TOO_LARGE = (
        413,
        "request body exceeds the size limit",
        "A request body is larger than the endpoint accepts.",
        _K.INVALID,
    )
    REQUEST_TIMEOUT = (
        408,
        "request body arrived too slowly",
        "A request body stalled longer than `WREG_BODY_TIMEOUT`; sending it again may work.",
        _K.TRANSIENT,
    )
    UNAUTHORIZED = (
        401,
        "authentication required: no valid bearer token",
        "No valid token; the answer carries `WWW-Authenticate: Bearer`.",
        _K.AUTH,
    )
    DENIED = (
        403,
        "the token lacks the scope this request needs",
        "The token is valid but has no scope for this action on this repository.",
        _K.AUTH,
    )
    TOKEN_INVALID = (
        400,
        "invalid token name or scope",
        "A token name or scope does not parse.",
        _K.INVALID,
    )
    TOKEN_EXISTS = (409, "a token with this name exists", "Token names are unique.", _K.CONFLICT)
    TOKEN_UNKNOWN = (404, "token unknown", "No live token has this name.", _K.NOT_FOUND)
    NOT_FOUND = (404, "no such endpoint", "No route matches the path.", _K.NOT_FOUND)
    METHOD_NOT_ALLOWED = (
        405,
        "method not allowed",
        "The path exists but not for this method; `Allow` lists the ones it takes.",
        _K.INVALID,
    )
    UNAVAILABLE = (
        503,
        "a backend is unavailable",
        "The index or the object store did not answer; retried by the client.",
        _K.TRANSIENT,
    )
    INTERNAL = (500, "internal error", "A bug; the server log has the request id.", _K.INTERNAL)

    # -- local codes: raised by the client, never sent ----------------------------------
    LOCAL_PATH_MISSING = (
        None,
        "no such file or directory",
        "A local path to push or write to does not exist or is not a directory.",
        _K.INVALID,
    )
    LOCAL_PATH_UNSAFE = (
        None,
        "refusing to write through a link",
        "A component of a path under `-o DIR` is a symlink or not a directory; wreg never"
        " writes through links in DIR.",
        _K.INVALID,
    )
    LOCAL_FILE_EXISTS = (
        None,
        "a different file is in the way",
        "A file under `-o DIR` holds other content than the model's; `--force` replaces it.",
        _K.INVALID,
    )
    LOCAL_EMPTY = (None, "nothing to push", "The directory to push holds no files.", _K.INVALID)
    FILTER_INVALID = (
        None,
        "invalid --include/--exclude pattern",
        "A path filter is malformed, or it matches no file of the manifest.",
        _K.INVALID,
    )
    SIZE_INVALID = (
        None,
        "invalid size",
        "A size such as `500M` or `1.5TiB` does not parse.",
        _K.INVALID,
    )
    PULL_TOO_LARGE = (
        None,
        "the pull would write more than allowed",
        "The files to write add up to more than `--max-total` or the destination's free space.",
        _K.INVALID,
    )
    FILE_CHANGED = (
        None,
        "a file changed while being pushed",
        "A file's size or bytes changed between hashing and upload; push again.",
        _K.CONFLICT,
    )
    NOT_CACHED = (
        None,
        "not in the node cache",
        "The node cache does not hold the reference or manifest (offline mode, `cache pin`).",
        _K.NOT_FOUND,
    )
    SNAPSHOT_INCOMPLETE = (
        None,
        "the cached snapshot is incomplete",
        "Offline, a cached snapshot lacks files its manifest lists.",
        _K.NOT_FOUND,
    )
    CACHE_UNTRUSTED = (
        None,
        "a node cache file cannot be trusted",
        "A cached blob, manifest or ref is not what its name says (or is owned by a user the"
        " cache does not trust) and wreg cannot replace it; its owner or an admin must remove"
        " it.",
        _K.INTEGRITY,
    )
    TENSORS_INVALID = (
        None,
        "not a valid tensor file (safetensors or GGUF)",
        "A safetensors or GGUF file read as tensors has a header that does not parse or declares"
        " tensors outside the file, overlapping, or of the wrong byte size.",
        _K.INVALID,
    )
    TENSORS_UNSUPPORTED = (
        None,
        "a tensor cannot be loaded",
        "A tensor's dtype has no numpy/torch type here, or the file is not safetensors.",
        _K.INVALID,
    )
    SELECTION_INVALID = (
        None,
        "invalid tensor selection",
        "`tensors=`, `rows=` or `shard=` (`--tensors`, `--shard`) is malformed or selects"
        " no tensor of the model.",
        _K.INVALID,
    )
    HF_SNAPSHOT_INVALID = (
        None,
        "not an importable Hugging Face snapshot",
        "`wreg import-hf` found no snapshot at the path, or one with a link out of its"
        " repository's `blobs/`, a dangling link or an unfinished (`.incomplete`) download.",
        _K.INVALID,
    )
    SETTING_INVALID = (
        None,
        "invalid setting",
        "A `WREG_*` environment variable (or the registry URL) does not parse or is out of"
        " range; the message names it and what it accepts. `wreg` exits with status 2.",
        _K.INVALID,
    )
    USAGE_INVALID = (
        None,
        "invalid command line",
        "`wreg` was given an unknown command or option, a bad option value, or no argument"
        " where one is needed; it exits with status 2.",
        _K.INVALID,
    )
    LOCAL_IO_FAILED = (
        None,
        "a local file operation failed",
        "Reading or writing a local file or directory failed (permissions, a full disk);"
        " the message has the system's reason and the path.",
        _K.INVALID,
    )

    def __init__(self, status: int | None, message: str, description: str, kind: ErrorKind) -> None:
        self.status = status
        self.message = message
        self.description = description
        self.kind = kind

    @property
    def local(self) -> bool:
        """True for failures of the client itself, never sent over HTTP."""
        return self.status is None

    @property
    def exception_class(self) -> type[WregError]:
        return _CLASS_OF_KIND[self.kind]

    def error(
        self, message: str | None = None, *, detail: Any = None, request_id: str | None = None
    ) -> WregError:
        """The exception for this code (of its kind's class), to ``raise``."""
        return self.exception_class(self, message, detail=detail, request_id=request_id)

    @classmethod
    def for_status(cls, status: int) -> ErrorCode:
        """The code for an HTTP error that carried none of ours (a proxy, a CDN, an old
        server): an explicit table, never a guess from a code's spelling."""
        if status in _STATUS_CODES:
            return _STATUS_CODES[status]
        if status == 429 or status >= 500:
            return ErrorCode.UNAVAILABLE
        return ErrorCode.INTERNAL  # an answer wreg cannot read: the registry's failure

    @classmethod
    def from_wire(cls, name: str, status: int) -> ErrorCode:
        """The code named in an error envelope; one we do not know maps by status."""
        member = cls.__members__.get(name)
        if member is None or member.local:
            return cls.for_status(status)
        return member


class WregError(Exception):
    """Root of every error wreg raises on purpose; ``code`` is its ``ErrorCode``."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        request_id: str | None = None,
    ) -> None:
        if code.kind is not self.kind:
            raise TypeError(f"{code.name} is a {code.kind.value} error, not {type(self).__name__}")
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.request_id = request_id
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.code.kind.retryable

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.name, "message": self.message, "detail": self.detail}

    def __str__(self) -> str:
        suffix = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.message}{suffix}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (_rebuild, (self.code.name, self.message, self.detail, self.request_id))


def _rebuild(code: str, message: str, detail: Any, request_id: str | None) -> WregError:
    return ErrorCode[code].error(message, detail=detail, request_id=request_id)


class InvalidInput(WregError):
    """The caller gave something malformed; retrying cannot help."""

    kind = ErrorKind.INVALID


class IntegrityError(WregError):
    """Bytes do not match their digest; permanent, never retried."""

    kind = ErrorKind.INTEGRITY


class NotFound(WregError):
    """A repository, tag, manifest or chunk does not exist."""

    kind = ErrorKind.NOT_FOUND


class AuthError(WregError):
    """No valid token (``UNAUTHORIZED``) or a token without the needed scope (``DENIED``)."""

    kind = ErrorKind.AUTH


class Conflict(WregError):
    """The state changed under the request (a tag moved, a name is taken, a file changed)."""

    kind = ErrorKind.CONFLICT


class TransportError(WregError):
    """The registry could not be reached, was too slow or is overloaded; may be retried."""

    kind = ErrorKind.TRANSIENT


class RegistryError(WregError):
    """The registry failed on its side (500) or answered something wreg cannot read."""

    kind = ErrorKind.INTERNAL


_CLASS_OF_KIND: dict[ErrorKind, type[WregError]] = {
    cls.kind: cls
    for cls in (
        InvalidInput,
        IntegrityError,
        NotFound,
        AuthError,
        Conflict,
        TransportError,
        RegistryError,
    )
}

_STATUS_CODES: dict[int, ErrorCode] = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.DENIED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.REQUEST_TIMEOUT,
    412: ErrorCode.TAG_CONFLICT,
    413: ErrorCode.BODY_TOO_LARGE,
    500: ErrorCode.INTERNAL,
}


def error_class_for(code: ErrorCode) -> type[WregError]:
    """The exception class the client raises for ``code`` (a table lookup by kind)."""
    return code.exception_class


def markdown_table() -> str:
    """README's error code table, generated from ``ErrorCode`` (a test keeps them equal)."""
    rows = ["| code | HTTP | kind | meaning |", "| --- | --- | --- | --- |"]
    for code in ErrorCode:
        status = "local" if code.status is None else str(code.status)
        rows.append(f"| `{code.name}` | {status} | {code.kind.value} | {code.description} |")
    return "\n".join(rows)
