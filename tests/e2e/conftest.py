"""A real ``wreg-server`` process on 127.0.0.1, and client settings pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    data: Path
    process: subprocess.Popen[bytes]


def start_server(data: Path, env: dict[str, str] | None = None) -> RunningServer:
    port = free_port()
    log = open(data.parent / f"server-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [BIN / "wreg-server", "serve", "--data", str(data), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | (env or {}),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"wreg-server exited: {(data.parent / f'server-{port}.log').read_text()}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return RunningServer(url, data, process)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("wreg-server did not start")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("server")
    running = start_server(root / "data")
    yield running
    stop_server(running)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def client_env(server: RunningServer, cache_dir: Path) -> dict[str, str]:
    """Environment for the ``wreg`` CLI: this server, a fresh node cache."""
    return os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache_dir)}
