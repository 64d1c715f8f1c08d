"""wreg: a content-addressed registry client for ML model weights.

The public surface is re-exported here; heavy modules load lazily so ``wreg --help``
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wreg.core.errors import (
    AuthError,
    Conflict,
    ErrorCode,
    ErrorKind,
    IntegrityError,
    InvalidInput,
    NotFound,
    RegistryError,
    TransportError,
    WregError,
)

if TYPE_CHECKING:
    from wreg._client import Client
    from wreg._load import TensorStream
    from wreg._results import (
        CachedSnapshot,
        CacheListing,
        PruneResult,
        PullResult,
        PushResult,
        VerifyResult,
        WarmResult,
    )

__all__ = [
    "AuthError",
    "CacheListing",
    "CachedSnapshot",
    "Client",
    "Conflict",
    "ErrorCode",
    "ErrorKind",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PruneResult",
    "PullResult",
    "PushResult",
    "RegistryError",
    "TransportError",
    "VerifyResult",
    "WarmResult",
    "WregError",
    "load",
    "stream",
]
__version__ = "0.1.0"


def load(ref: str, **options: Any) -> dict[str, Any]:
    """``Client().load(ref, ...)``: the tensors of ``ref`` by name, with the client
    configured from ``WREG_*`` settings (see ``Client.stream`` for the options)."""
    from wreg._client import Client

    return Client().load(ref, **options)


def stream(ref: str, **options: Any) -> TensorStream:
    """``Client().stream(ref, ...)``: ``(name, tensor)`` pairs as each is verified."""
    from wreg._client import Client

    return Client().stream(ref, **options)


def __getattr__(name: str) -> Any:
    if name == "Client":
        from wreg._client import Client

        return Client
    if name in {
        "CacheListing",
        "CachedSnapshot",
        "PruneResult",
        "PullResult",
        "PushResult",
        "VerifyResult",
        "WarmResult",
    }:
        from wreg import _results

        return getattr(_results, name)
    raise AttributeError(f"module 'wreg' has no attribute {name!r}")
