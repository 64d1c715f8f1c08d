"""``INSERT … ON CONFLICT`` for whichever backend a session talks to.

Idempotent writes (re-uploading a chunk, re-committing a manifest, two pushes creating
one repository at once) are expressed as conflict clauses rather than read-then-write,
so they stay correct under concurrency without savepoints. SQLite (3.35+) and
PostgreSQL share the syntax; SQLAlchemy just needs the right dialect's construct.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

Insert = sqlite.Insert | postgresql.Insert


def insert(session: AsyncSession, table: Any) -> Insert:
    """An INSERT supporting ``on_conflict_do_nothing/update`` for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"unsupported database backend {name!r}")
