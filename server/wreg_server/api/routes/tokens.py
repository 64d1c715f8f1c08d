"""``/v1/tokens``: the admin API for bearer tokens (needs ``admin:*``), and ``self``.

``GET /v1/tokens/self`` answers any caller with the token's name and scopes — what
``wreg login`` checks a token with before saving it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from wreg_server.api.body import openapi_body, read_json
from wreg_server.api.caching import no_store
from wreg_server.api.deps import SessionDep, SettingsDep
from wreg_server.api.schemas import TokenCreate, TokenCreated, TokenList, TokenOut, TokenSelf
from wreg_server.auth import tokens
from wreg_server.auth.guard import PrincipalDep, token_cache

# Secrets and scopes that change: never cached (api/caching.py).
router = APIRouter(prefix="/v1/tokens", tags=["tokens"], dependencies=[Depends(no_store)])


def _out(info: tokens.TokenInfo) -> TokenOut:
    return TokenOut(
        name=info.name,
        scopes=[str(s) for s in info.scopes],
        created_at=info.created_at,
        last_used_at=info.last_used_at,
        revoked_at=info.revoked_at,
    )


@router.get("/self", response_model=TokenSelf)
async def whoami(principal: PrincipalDep, settings: SettingsDep) -> TokenSelf:
    """The calling token's name and scopes (``name`` is null when anonymous or auth is off)."""
    return TokenSelf(
        name=principal.name,
        scopes=[str(s) for s in principal.scopes],
        auth=settings.auth_enabled,
    )


@router.post(
    "",
    status_code=201,
    response_model=TokenCreated,
    openapi_extra=openapi_body(TokenCreate),
)
async def create_token(
    request: Request, session: SessionDep, settings: SettingsDep
) -> TokenCreated:
    """Create a token; the secret is in this response only (the index keeps its hash)."""
    body = await read_json(request, TokenCreate, settings.max_json_body)
    info, secret = await tokens.create(session, body.name, body.scopes)
    return TokenCreated(
        name=info.name,
        token=secret,
        scopes=[str(s) for s in info.scopes],
        created_at=info.created_at,
    )


@router.get("", response_model=TokenList)
async def list_tokens(session: SessionDep) -> TokenList:
    """Every token, revoked ones included, without secrets."""
    return TokenList(tokens=[_out(t) for t in await tokens.list_all(session)])


@router.delete("/{token_name}", status_code=204, response_class=Response)
async def revoke_token(token_name: str, request: Request, session: SessionDep) -> Response:
    """Revoke a token: at once on this replica, within WREG_AUTH_CACHE_SECONDS on others."""
    await tokens.revoke(session, token_name)
    token_cache(request).clear()
    return Response(status_code=204)
