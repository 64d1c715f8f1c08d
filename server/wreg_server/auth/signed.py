"""Signed URLs: a request authorized by its URL alone, for clients that send no token.

huggingface_hub's LFS upload ``PUT`` carries no ``Authorization`` header (the Hub hands
out presigned storage URLs), so the batch response, itself authorized by the caller's
token, hands out a URL signed for exactly one object: the path, its declared size and an
expiry, under HMAC-SHA256 with the server's ``WREG_HF_UPLOAD_SECRET`` (replicas behind
one name must share it; unset, each process draws its own). The guard checks the
signature like a token (``auth/guard.py``): a URL grants that one upload and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final
from urllib.parse import urlencode

from wreg.core.errors import ErrorCode, WregError

LIFETIME: Final = 3600
"""Seconds a signed URL stays valid."""


def _mac(secret: str, path: str, size: int, expires: int) -> str:
    message = f"{path}\n{size}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, path: str, size: int, now: float | None = None) -> str:
    """The query string that authorizes ``PUT path`` of ``size`` bytes for ``LIFETIME``."""
    expires = int((now if now is not None else time.time()) + LIFETIME)
    return urlencode({"size": size, "expires": expires, "sig": _mac(secret, path, size, expires)})


def check(secret: str, path: str, query: dict[str, str]) -> int:
    """The size a signed URL grants; raises ``UNAUTHORIZED`` if forged or expired."""
    try:
        size, expires, sig = int(query["size"]), int(query["expires"]), query["sig"]
    except (KeyError, ValueError):
        raise _refused("the upload URL is not signed") from None
    if not hmac.compare_digest(sig, _mac(secret, path, size, expires)):
        raise _refused("the upload URL's signature does not match")
    if expires < time.time():
        raise _refused("the upload URL has expired: ask the batch endpoint again")
    return size


def _refused(message: str) -> WregError:
    return ErrorCode.UNAUTHORIZED.error(message, detail={"invalid_token": True})
