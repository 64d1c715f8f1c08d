"""Fixtures: a real registry server per test on 127.0.0.1, and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.server_support import Api, make_settings, running
from tests.services.moto import MotoS3
from tests.services.postgres import PostgresServer
from wreg_server.app import create_app
from wreg_server.db.migrate import upgrade
from wreg_server.settings import ServerSettings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_database(postgres: PostgresServer) -> str:
    """One migrated database for the session, emptied before each test that uses it."""
    name = postgres.create_database("wreg_server_tests")
    upgrade(postgres.url(name))
    return name


@pytest.fixture(params=["sqlite", "postgres-s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ServerSettings:
    """Every server test runs on both deployments: SQLite + filesystem store (one box) and
    PostgreSQL + S3 (moto; a fresh bucket per test, so tests never see each other's chunks).

    Tests that look behind the API at stored objects go through ``server_support``'s
    store-agnostic helpers (``with_store``, ``stored_chunks``), never the filesystem.
    """
    if request.param == "sqlite":
        return make_settings(tmp_path / "data")
    postgres: PostgresServer = request.getfixturevalue("postgres")
    database: str = request.getfixturevalue("postgres_database")
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    bucket: str = request.getfixturevalue("s3_bucket")
    postgres.reset(database)
    return make_settings(
        tmp_path / "data", database_url=postgres.url(database), **moto.settings(bucket)
    )


@pytest.fixture
def base_url(settings: ServerSettings) -> Iterator[str]:
    with running(create_app(settings)) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[Api]:
    with Api(base_url) as client:
        yield client
