"""wreg: a content-addressed registry client for ML model weights.

The public surface is re-exported here; heavy modules load lazily so ``wreg --help``
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wreg.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    RegistryError,
    TransportError,
    WregError,
)

if TYPE_CHECKING:
    from wreg._client import Client
    from wreg._results import PullResult, PushResult

__all__ = [
    "Client",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PullResult",
    "PushResult",
    "RegistryError",
    "TransportError",
    "WregError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Client":
        from wreg._client import Client

        return Client
    if name in {"PullResult", "PushResult"}:
        from wreg import _results

        return getattr(_results, name)
    raise AttributeError(f"module 'wreg' has no attribute {name!r}")
