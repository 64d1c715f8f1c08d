"""Fixtures: a real registry server per test on 127.0.0.1, and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_support import Api, make_settings, running

from wreg_server.app import create_app
from wreg_server.settings import ServerSettings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def base_url(settings: ServerSettings) -> Iterator[str]:
    with running(create_app(settings)) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[Api]:
    client = Api(base_url)
    try:
        yield client
    finally:
        client.close()
