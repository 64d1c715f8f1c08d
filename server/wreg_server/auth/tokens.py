"""Tokens in the index: create, verify, revoke, list.

A token is ``wreg_`` + ``secrets.token_urlsafe(32)``: 256 random bits behind a prefix
that secret scanners and humans recognise. The index keeps only its SHA-256 (hex), never
the token, so a leaked database or backup does not hand out credentials.

Why a plain SHA-256 and no slow KDF (bcrypt, scrypt, argon2): slow hashes exist to make
guessing *low-entropy* secrets (passwords) expensive. A uniformly random 256-bit token
cannot be guessed whatever the hash costs — finding one from its SHA-256 is a preimage
search over 2**256 values — so a slow hash would add nothing but CPU on every request.
An unsalted, deterministic hash also lets a request find its token with one indexed
lookup instead of trying every row.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.errors import ErrorCode
from wreg_server.auth.scopes import Scope, parse_scope, parse_scopes
from wreg_server.db.models import Token
from wreg_server.db.types import utcnow

log = logging.getLogger(__name__)
PREFIX: Final = "wreg_"
_TOKEN_RE: Final = re.compile(r"wreg_[A-Za-z0-9_-]{20,200}")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# last_used_at is written at most this often per token, so using a token does not turn
# every request into a write.
TOUCH_INTERVAL: Final = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: everything but the secret."""

    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "name": self.name,
            "scopes": [str(s) for s in self.scopes],
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
        }


def generate() -> str:
    """A fresh token (256 random bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the index stores and looks tokens up by: SHA-256, hex (see module docstring)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(value: str) -> bool:
    """Well-formed enough to be worth a database lookup."""
    return _TOKEN_RE.fullmatch(value) is not None


def validate_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or name == "self":
        raise ErrorCode.TOKEN_INVALID.error(
            f"invalid token name {name!r}: expected 1-128 characters of A-Z, a-z, 0-9, "
            "'.', '_', '-' (not starting with '.', '_' or '-'; not 'self')",
            detail={"name": name},
        )
    return name


def _info(row: Token) -> TokenInfo:
    return TokenInfo(
        row.name,
        tuple(parse_scope(s) for s in row.scopes.split()),
        row.created_at,
        row.last_used_at,
        row.revoked_at,
    )


async def create(session: AsyncSession, name: str, scopes: Sequence[str]) -> tuple[TokenInfo, str]:
    """Create token ``name`` with ``scopes`` (``push:team-a/*``); returns it and the secret.

    The secret is returned once, here, and never stored: lose it and make a new token.
    """
    validate_name(name)
    parsed = parse_scopes(tuple(scopes))
    token = generate()
    row = Token(
        name=name,
        token_hash=hash_token(token),
        scopes=" ".join(str(s) for s in parsed),
        created_at=utcnow(),
    )
    session.add(row)
    try:
        await session.commit()
    except DBIntegrityError:
        await session.rollback()
        raise ErrorCode.TOKEN_EXISTS.error(
            f"a token named {name!r} exists; revoke it first or pick another name",
            detail={"name": name},
        ) from None
    return _info(row), token


async def verify(session: AsyncSession, token: str) -> TokenInfo | None:
    """The live (not revoked) token ``token`` is, or ``None``; records its use."""
    if not looks_like_token(token):
        return None
    token_hash = hash_token(token)
    row = await session.scalar(
        select(Token).where(Token.token_hash == token_hash, Token.revoked_at.is_(None))
    )
    if row is None:
        return None
    info = _info(row)
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL:
        try:
            await session.execute(
                update(Token)
                .where(
                    Token.id == row.id,
                    or_(Token.last_used_at.is_(None), Token.last_used_at < now - TOUCH_INTERVAL),
                )
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        except SQLAlchemyError as exc:  # bookkeeping only: never fail the request for it
            await session.rollback()
            log.warning("could not record the use of token %r: %s", info.name, exc)
    return info


async def revoke(session: AsyncSession, name: str) -> TokenInfo:
    """Revoke the live token ``name``; raises ``NotFound`` (``TOKEN_UNKNOWN``).

    ``name`` is validated by the caller: the guard (``DELETE /v1/tokens/{token_name}``) or
    the CLI, so a request validates it once.
    """
    row = await session.scalar(select(Token).where(Token.name == name, Token.revoked_at.is_(None)))
    if row is None:
        raise ErrorCode.TOKEN_UNKNOWN.error(f"no live token named {name!r}", detail={"name": name})
    row.revoked_at = utcnow()
    await session.commit()
    return _info(row)


async def list_all(session: AsyncSession, include_revoked: bool = True) -> list[TokenInfo]:
    """Every token by name (live ones first for a reused name), without secrets."""
    query = select(Token).order_by(Token.name, Token.revoked_at.is_not(None), Token.id)
    if not include_revoked:
        query = query.where(Token.revoked_at.is_(None))
    return [_info(row) for row in (await session.scalars(query)).all()]
