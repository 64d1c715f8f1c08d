"""``/v1/repositories/{name}/inspect/{reference}``: a manifest's files and tensors.

What ``wreg inspect`` and ``wreg diff`` read: every safetensors/GGUF file's tensors
(name, dtype, shape, offset, bytes, parameters, tensor digest) and metadata, described
by the registry from header chunks (``domain/inspect.py``), so no client downloads
tensor bytes to learn what a model holds. A read: needs pull on ``name`` (the guard).
Path parameters arrive validated (``auth/guard.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from wreg_server.api.caching import no_store
from wreg_server.api.deps import SessionDep, StoreDep
from wreg_server.domain import inspect

# By tag the answer moves; by digest it is small to recompute (cached by file identity).
router = APIRouter(prefix="/v1/repositories", tags=["inspect"], dependencies=[Depends(no_store)])


@router.get("/{name:path}/inspect/{reference}")
async def inspect_manifest(
    name: str, reference: str, session: SessionDep, store: StoreDep
) -> dict[str, Any]:
    """The manifest's files with their tensors and metadata, and totals (README,
    "wreg inspect"). Tensor files whose header does not parse carry an ``error``."""
    return await inspect.describe(session, store, name, reference)
