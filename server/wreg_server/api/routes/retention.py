"""``/v1/repositories/{name}/retention``: a repository's retention policy (admin on it).

``GET`` shows the policy (``policy`` null when none), ``PUT`` sets it (JSON ``keep``,
``match``, ``protect``), ``DELETE`` clears it (idempotent), ``GET .../retention/plan`` is
the dry run: what the next ``wreg-server gc`` would delete and what it keeps and why
(``domain/retention.py``). Policies are applied by GC only, never by these routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from wreg_server.api.body import openapi_body, read_json
from wreg_server.api.caching import no_store
from wreg_server.api.deps import SessionDep, SettingsDep
from wreg_server.api.schemas import (
    RetentionPlanOut,
    RetentionPolicyIn,
    RetentionPolicyOut,
    RetentionState,
    RetentionVerdict,
)
from wreg_server.domain import retention

router = APIRouter(prefix="/v1/repositories", tags=["retention"], dependencies=[Depends(no_store)])


def _policy(policy: retention.Policy | None) -> RetentionPolicyOut | None:
    if policy is None:
        return None
    return RetentionPolicyOut(
        keep=policy.keep,
        match=policy.match,
        protect=list(policy.protect),
        updated_at=policy.updated_at,
    )


def _verdicts(verdicts: tuple[retention.Verdict, ...]) -> list[RetentionVerdict]:
    return [
        RetentionVerdict(
            digest=v.digest, tags=list(v.tags), created_at=v.created_at, reason=v.reason
        )
        for v in verdicts
    ]


@router.get("/{name:path}/retention/plan", response_model=RetentionPlanOut)
async def plan_retention(name: str, session: SessionDep) -> RetentionPlanOut:
    """The dry run: the manifests the next GC would delete, and those it keeps, with why."""
    found = await retention.plan(session, name)
    return RetentionPlanOut(
        name=name,
        policy=_policy(found.policy),
        delete=_verdicts(found.delete),
        keep=_verdicts(found.keep),
        untouched=found.untouched,
    )


@router.get("/{name:path}/retention", response_model=RetentionState)
async def get_retention(name: str, session: SessionDep) -> RetentionState:
    """The repository's policy; ``policy`` is null when it has none."""
    return RetentionState(name=name, policy=_policy(await retention.get(session, name)))


@router.put(
    "/{name:path}/retention",
    response_model=RetentionState,
    openapi_extra=openapi_body(RetentionPolicyIn),
)
async def put_retention(
    name: str, request: Request, session: SessionDep, settings: SettingsDep
) -> RetentionState:
    """Set (create or replace) the policy; the repository need not exist yet."""
    body = await read_json(request, RetentionPolicyIn, settings.max_json_body)
    policy = retention.Policy.of(name, body.keep, body.match, body.protect)
    return RetentionState(name=name, policy=_policy(await retention.set_policy(session, policy)))


@router.delete("/{name:path}/retention", status_code=204, response_class=Response)
async def delete_retention(name: str, session: SessionDep) -> Response:
    """Clear the policy (nothing is deleted by retention any more); 204 even if none."""
    await retention.clear(session, name)
    return Response(status_code=204)
