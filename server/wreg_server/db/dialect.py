"""``INSERT … ON CONFLICT`` for whichever backend a session talks to.

Idempotent writes (re-uploading a chunk, re-committing a manifest, two pushes creating
one repository at once) are expressed as conflict clauses rather than read-then-write,
so they stay correct under concurrency without savepoints. SQLite (3.35+) and
PostgreSQL share the syntax; SQLAlchemy just needs the right dialect's construct.

Sets of values (``values_of``) travel as *one* bind parameter — a JSON array read by
SQLite's ``json_each``, a ``text[]`` unnested by PostgreSQL — so a query about 35 000
digests is one statement, not 70 ``IN (...)`` lists of 500 bind parameters each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import ColumnElement, Text, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

# Values per ``values_of`` statement: bounds one statement's parameter (~75 bytes each).
SET_BATCH: Final = 20_000

Insert = sqlite.Insert | postgresql.Insert


def insert(session: AsyncSession, table: Any) -> Insert:
    """An INSERT supporting ``on_conflict_do_nothing/update`` for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"unsupported database backend {name!r}")


def values_of(session: AsyncSession, values: Sequence[str]) -> Select[Any]:
    """``SELECT value FROM <values>``: a subquery of ``values`` (at most ``SET_BATCH``),
    sent as one bind parameter, for ``column.in_(values_of(...))`` and joins."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        rows = func.json_each(bindparam(None, json.dumps(list(values)), type_=Text))
        table = rows.table_valued("value")
        return select(table.c.value)
    if name == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(Text))
        table = func.unnest(array).table_valued("value").render_derived()
        return select(table.c.value)
    raise NotImplementedError(f"unsupported database backend {name!r}")


def in_values(session: AsyncSession, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN (SELECT value FROM <values>)`` (see ``values_of``)."""
    return column.in_(values_of(session, values))  # type: ignore[no-any-return]
