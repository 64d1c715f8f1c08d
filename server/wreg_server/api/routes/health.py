"""Liveness (``/healthz``: the process answers), readiness (``/readyz``: backends answer)
and Prometheus metrics (``/metrics``, see ``wreg_server/metrics.py``)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from wreg.core.errors import ErrorCode
from wreg_server.api.deps import ContextDep
from wreg_server.api.schemas import Health
from wreg_server.metrics import CONTENT_TYPE_LATEST, Metrics

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(context: ContextDep) -> Health:
    """Ready when the index answers a query and the object store answers a lookup."""
    try:
        async with context.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        await context.store.exists("readyz")
    except Exception as exc:
        log.warning("not ready: %s", exc)
        raise ErrorCode.UNAVAILABLE.error(f"backend unavailable: {exc}") from None
    return Health(status="ok")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """This process's counters in the Prometheus text format."""
    registry = request.app.state.metrics
    assert isinstance(registry, Metrics)  # noqa: S101 - narrows app.state (create_app sets it)
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
