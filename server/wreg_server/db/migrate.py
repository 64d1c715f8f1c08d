"""Apply Alembic migrations programmatically (no ``alembic.ini`` needed).

The scripts live in the top-level ``migrations/`` of a source checkout; wheels carry the
same directory as ``wreg_server/_migrations`` (pyproject force-includes it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from wreg_server.db.session import create_engine

_PACKAGE = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """The directory holding ``env.py``: packaged copy first, then the source checkout."""
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("wreg-server migrations not found (broken install?)")


def alembic_config(database_url: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` (reuses its connection; safe inside a loop)."""

    def run(connection: Connection) -> None:
        url = engine.url.render_as_string(hide_password=False)
        command.upgrade(alembic_config(url, connection), revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database at ``database_url``; call from synchronous code (the CLI)."""

    async def main() -> None:
        engine = create_engine(database_url)
        try:
            await upgrade_engine(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(main())
