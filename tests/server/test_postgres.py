"""PostgreSQL as the index: ``wreg-server db upgrade`` and a real ``wreg-server serve``.

The rest of the server suite runs on PostgreSQL too (the ``settings`` fixture); these are
the parts that need a process of their own or an empty database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from tests.server.server_support import Api, schema_drift
from tests.services.postgres import PostgresServer
from wreg.testing.servers import run_wreg_server, start_server
from wreg_server.db.migrate import alembic_config, upgrade
from wreg_server.db.models import Base

TABLES = {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"}


def database_of(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


def tables(postgres: PostgresServer, url: str) -> set[str]:
    out = postgres.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database_of(url)
    )
    return set(out.split())


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_db_upgrade_command(postgres: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    env = {"WREG_DATABASE_URL": postgres_url, "WREG_DATA": str(tmp_path / "data")}
    for _ in range(2):  # idempotent
        done = run_wreg_server("db", "upgrade", env=env)
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
    assert tables(postgres, postgres_url) == TABLES
    version = postgres.sql("SELECT version_num FROM alembic_version", database_of(postgres_url))
    assert version == head_revision(postgres_url)
    assert not (tmp_path / "data" / "index.sqlite").exists()


def test_migrations_match_models(postgres_url: str) -> None:
    """Alembic's schema on PostgreSQL is exactly what the models declare (types included)."""
    upgrade(postgres_url)
    assert schema_drift(postgres_url) == []


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """``wreg-server serve`` in its own process on a migrated PostgreSQL database."""
    upgrade(postgres_url)
    env = {"WREG_DATABASE_URL": postgres_url, "WREG_STORE_FSYNC": "false"}
    server = start_server(tmp_path / "data", env, log=tmp_path / "server.log")
    try:
        yield server.url
    finally:
        server.stop()


def test_serve_on_postgres(
    served: str, postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    assert httpx.get(f"{served}/readyz").status_code == 200
    with Api(served) as api:
        manifest = api.push("team/model", ("weights.bin", b"w" * 3000), ("config.json", b"{}"))
        r = api.http.get("/v1/repositories/team/model/manifests/latest")
        assert r.status_code == 200
        assert r.content == manifest.to_json_bytes()
        tags = api.http.get("/v1/repositories/team/model/tags").json()["tags"]
        assert [(t["tag"], t["digest"]) for t in tags] == [("latest", manifest.digest)]
    # The index is PostgreSQL: the rows are there, and no SQLite file was made.
    database = database_of(postgres_url)
    assert postgres.sql("SELECT count(*) FROM manifests", database) == "1"
    assert postgres.sql("SELECT count(*) FROM chunks", database) == "2"
    assert postgres.sql("SELECT name FROM tags", database) == "latest"
    assert not (tmp_path / "data" / "index.sqlite").exists()
