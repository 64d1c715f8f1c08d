"""Scopes (``pull:team-a/*``) and principals (who a request acts as, with which scopes).

A scope is an action on a repository glob. Actions are ordered: ``push`` implies
``pull``, ``admin`` implies both. The glob is matched with ``fnmatch.fnmatchcase``
against the whole repository name, so ``*`` matches every repository (its ``*`` crosses
``/`` too) and ``team-a/*`` every repository in namespace ``team-a``; beware that
``team-a*`` also matches ``team-abc/x``.

Token management (``/v1/tokens``, ``wreg-server token``) needs ``admin`` on ``*``: a
token can be given scopes on any repository, so managing tokens is managing everything.
An ``admin`` scope on a narrower glob is thus the same as ``push`` on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, Literal

from wreg.core.errors import ErrorCode

Action = Literal["pull", "push", "admin"]
ACTIONS: Final[tuple[Action, ...]] = ("pull", "push", "admin")
_RANK: Final = {a: i for i, a in enumerate(ACTIONS)}
# Repository-name characters plus the fnmatch wildcards; no spaces (scopes are stored
# space-separated) and nothing that could make a glob mean more than it looks like.
_GLOB_RE: Final = re.compile(r"[a-z0-9._/*?\[\]!-]{1,255}")
MAX_SCOPES: Final = 64


@dataclass(frozen=True, slots=True)
class Scope:
    action: Action
    glob: str

    def __str__(self) -> str:
        return f"{self.action}:{self.glob}"

    def grants(self, action: Action, repository: str) -> bool:
        return _RANK[self.action] >= _RANK[action] and fnmatchcase(repository, self.glob)


def parse_scope(text: str) -> Scope:
    """``pull:team-a/*`` → ``Scope``; raises ``InvalidInput`` (``TOKEN_INVALID``)."""
    action, sep, glob = text.partition(":")
    if not sep or action not in _RANK or not _GLOB_RE.fullmatch(glob):
        raise ErrorCode.TOKEN_INVALID.error(
            f"invalid scope {text!r}: expected ACTION:GLOB with ACTION one of "
            "pull, push, admin and GLOB a repository name pattern (team-a/*, *)",
            detail={"scope": text},
        )
    return Scope(action, glob)


def parse_scopes(texts: list[str] | tuple[str, ...]) -> tuple[Scope, ...]:
    if not texts:
        raise ErrorCode.TOKEN_INVALID.error("a token needs at least one scope")
    if len(texts) > MAX_SCOPES:
        raise ErrorCode.TOKEN_INVALID.error(f"at most {MAX_SCOPES} scopes per token")
    return tuple(dict.fromkeys(parse_scope(t) for t in texts))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token's name and scopes, anonymous, or unrestricted."""

    name: str | None
    scopes: tuple[Scope, ...]
    is_anonymous: bool = False

    @classmethod
    def unrestricted(cls) -> Principal:
        """What every request acts as when auth is off."""
        return cls(None, (Scope("admin", "*"),))

    @classmethod
    def anonymous(cls) -> Principal:
        """A request without a token, when anonymous pull is on."""
        return cls(None, (Scope("pull", "*"),), is_anonymous=True)

    def can(self, action: Action, repository: str) -> bool:
        """Whether ``action`` on ``repository`` is allowed."""
        return any(s.grants(action, repository) for s in self.scopes)

    def can_any(self, action: Action) -> bool:
        """Whether ``action`` is allowed on at least one repository (global chunk routes)."""
        return any(_RANK[s.action] >= _RANK[action] for s in self.scopes)

    def can_all(self, action: Action) -> bool:
        """Whether ``action`` is allowed on every repository (a scope on ``*``)."""
        return any(s.glob == "*" and _RANK[s.action] >= _RANK[action] for s in self.scopes)

    def can_manage_tokens(self) -> bool:
        return any(s.action == "admin" and s.glob == "*" for s in self.scopes)
