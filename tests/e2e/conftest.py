"""A real ``wreg-server`` process on 127.0.0.1, and client settings pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("server")
    running = start_server(root / "data")
    yield running
    running.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def client_env(server: RunningServer, cache_dir: Path) -> dict[str, str]:
    """Environment for the ``wreg`` CLI: this server, a fresh node cache."""
    return os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache_dir)}
