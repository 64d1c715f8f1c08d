"""Session-wide test services (see ``tests/services``), started only when a test asks."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import postgres as pg
from tests.services.moto import MotoS3, moto_server

_TORCH_SUITE = Path(__file__).resolve().parent / "torch"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/torch out where torch is not installed (.venv), unless it is named.

    The torch suite runs in .venv-torch (``make test-torch``); named on the command line
    without torch, its conftest skips it (or, with WREG_REQUIRE_TORCH=1, fails the session).
    """
    if collection_path != _TORCH_SUITE or importlib.util.find_spec("torch") is not None:
        return None
    here = config.invocation_params.dir
    for arg in config.args:
        named = (here / arg.split("::", 1)[0]).resolve()
        if named == _TORCH_SUITE or _TORCH_SUITE in named.parents:
            return None
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresServer]:
    """A private PostgreSQL cluster on 127.0.0.1, installed (apt) and started on demand.

    Where PostgreSQL cannot be had, its tests fail on CI (``CI=true``) and skip elsewhere.
    """
    try:
        server = pg.start()
    except pg.PostgresUnavailable as exc:
        reason = f"PostgreSQL is unavailable: {exc}"
    else:
        reason = ""
    if reason:
        if pg.in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: pg.PostgresServer) -> Iterator[str]:
    """A fresh, empty database (no schema), dropped after the test."""
    name = postgres.create_database()
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's standalone S3 server on a free 127.0.0.1 port, for the whole session."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with moto_server(log) as server:
        yield server


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A fresh, empty bucket on the session's moto server."""
    return moto_s3.create_bucket()
