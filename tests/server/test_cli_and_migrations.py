"""The ``wreg-server`` command, migrations, and settings."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
from alembic import command

from tests.server.server_support import schema_drift
from wreg.testing.servers import run_wreg_server, start_server
from wreg_server.db.migrate import alembic_config, migrations_dir, upgrade
from wreg_server.settings import ServerSettings, get_settings

TABLES = {
    "alembic_version",
    "repositories",
    "manifests",
    "chunks",
    "manifest_chunks",
    "tags",
    "tokens",
    "chunk_claims",
    "retention_policies",
    "file_hashes",
    "lfs_objects",
}


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_db_upgrade_command(tmp_path: Path) -> None:
    for _ in range(2):  # idempotent
        done = run_wreg_server("db", "upgrade", "--data", str(tmp_path), timeout=60)
        assert done.returncode == 0, done.stderr
    assert tables(tmp_path / "index.sqlite") == TABLES


def test_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"
    upgrade(url)
    assert schema_drift(url) == []


def test_migration_renders_for_postgresql() -> None:
    """Offline mode: the DDL PostgreSQL would run (no server needed)."""
    buffer = io.StringIO()
    config = alembic_config("postgresql://user:pw@localhost/wreg")
    config.stdout = buffer
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE manifests" in sql
    assert "BYTEA" in sql
    assert "BIGSERIAL" in sql or "BIGINT" in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql


def test_migrations_dir_found() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert (migrations_dir() / "versions" / "0001_initial.py").is_file()


def test_serve_command(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")  # up once /healthz answers 200
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert tables(tmp_path / "data" / "index.sqlite") == TABLES
    finally:
        server.stop()


def test_settings_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WREG_DATA", str(tmp_path))
    monkeypatch.setenv("WREG_MAX_JSON_BODY", "123")
    settings = ServerSettings()
    assert settings.data == tmp_path
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"
    assert settings.objects_path == tmp_path / "objects"
    assert settings.max_json_body == 123
    monkeypatch.setenv("WREG_DATABASE_URL", "postgresql+asyncpg://db/wreg")
    assert ServerSettings().database_url == "postgresql+asyncpg://db/wreg"
    assert not ServerSettings().is_sqlite


def test_relative_data_dir_becomes_absolute_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WREG_DATA", raising=False)
    monkeypatch.delenv("WREG_DATABASE_URL", raising=False)
    url = ServerSettings(data=Path("rel")).database_url
    assert url == f"sqlite+aiosqlite:///{Path(os.getcwd()) / 'rel' / 'index.sqlite'}"


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
