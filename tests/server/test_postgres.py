"""PostgreSQL as the index: ``wreg-server db upgrade`` and a real ``wreg-server serve``.

The rest of the server suite runs on PostgreSQL too (the ``settings`` fixture); these are
the parts that need a process of their own or an empty database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from server_support import Api, free_port
from sqlalchemy.engine import Connection, make_url

from tests.services.postgres import PostgresServer
from wreg_server.db.migrate import alembic_config, upgrade
from wreg_server.db.models import Base
from wreg_server.db.session import create_engine

WREG_SERVER = str(Path(sys.executable).with_name("wreg-server"))
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
    env = os.environ | {"WREG_DATABASE_URL": postgres_url, "WREG_DATA": str(tmp_path / "data")}
    for _ in range(2):  # idempotent
        done = subprocess.run(
            [WREG_SERVER, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
    assert tables(postgres, postgres_url) == TABLES
    version = postgres.sql("SELECT version_num FROM alembic_version", database_of(postgres_url))
    assert version == head_revision(postgres_url)
    assert not (tmp_path / "data" / "index.sqlite").exists()


def test_migrations_match_models(postgres_url: str) -> None:
    """Alembic's schema on PostgreSQL is exactly what the models declare (types included)."""
    upgrade(postgres_url)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def main() -> list[object]:
        engine = create_engine(postgres_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(diff)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == []


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """``wreg-server serve`` in its own process on a migrated PostgreSQL database."""
    upgrade(postgres_url)
    port = free_port()
    log_path = tmp_path / "server.log"
    env = os.environ | {"WREG_DATABASE_URL": postgres_url, "WREG_STORE_FSYNC": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [WREG_SERVER, "serve", "--data", str(tmp_path / "data"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"wreg-server did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_on_postgres(
    served: str, postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    assert httpx.get(f"{served}/readyz").status_code == 200
    api = Api(served)
    try:
        manifest = api.push("team/model", ("weights.bin", b"w" * 3000), ("config.json", b"{}"))
        r = api.http.get("/v1/repositories/team/model/manifests/latest")
        assert r.status_code == 200
        assert r.content == manifest.to_json_bytes()
        tags = api.http.get("/v1/repositories/team/model/tags").json()["tags"]
        assert [(t["tag"], t["digest"]) for t in tags] == [("latest", manifest.digest)]
    finally:
        api.close()
    # The index is PostgreSQL: the rows are there, and no SQLite file was made.
    database = database_of(postgres_url)
    assert postgres.sql("SELECT count(*) FROM manifests", database) == "1"
    assert postgres.sql("SELECT count(*) FROM chunks", database) == "2"
    assert postgres.sql("SELECT name FROM tags", database) == "latest"
    assert not (tmp_path / "data" / "index.sqlite").exists()
