"""Slow and huge requests cannot pin server memory or connections; ``serve`` sets timeouts.

These speak raw HTTP/1.1 over a socket, so the test controls exactly what is sent and
when: a declared length far over the cap, a chunked body trickled past the cap, a body
that stalls.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.server.server_support import TEST_LIMITS, Chunk, make_settings, raw_manifest, running
from wreg.core.digest import digest_bytes
from wreg.core.sizes import MAX_MANIFEST_FILES
from wreg_server import cli
from wreg_server.app import create_app

LIMIT = TEST_LIMITS["max_chunk_encoded"]


@pytest.fixture
def address(tmp_path: Path) -> Iterator[tuple[str, int]]:
    settings = make_settings(tmp_path / "data", body_timeout=0.5, max_manifest_bytes=1 << 20)
    with running(create_app(settings)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def status_and_body(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_huge_content_length_is_refused_before_any_body(address: tuple[str, int]) -> None:
    digest = Chunk.of(b"x").digest
    with socket.create_connection(address) as sock:
        sock.sendall(
            f"PUT /v1/repositories/t/m/chunks/{digest} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Length: {10**15}\r\n\r\n".encode()
        )
        t0 = time.monotonic()
        status, body = status_and_body(sock)
    assert status == 413
    assert b"CHUNK_TOO_LARGE" in body
    assert time.monotonic() - t0 < 5


def test_slow_body_past_the_cap_is_cut_off_at_the_cap(address: tuple[str, int]) -> None:
    """A chunked body trickled in 4 KiB pieces: the server answers 413 as soon as it has
    read past the cap, while the client is still sending — it never buffers more."""
    digest = Chunk.of(b"x").digest
    piece = b"\0" * 4096
    sent = 0
    with socket.create_connection(address) as sock:
        sock.sendall(
            f"PUT /v1/repositories/t/m/chunks/{digest} HTTP/1.1\r\nHost: t\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        answered = b""
        while sent < 4 * LIMIT:
            try:
                answered = sock.recv(65536)
            except BlockingIOError:
                answered = b""
            if answered:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            time.sleep(0.002)
        sock.setblocking(True)
        if not answered:
            status, body = status_and_body(sock)
        else:
            status, body = int(answered.split(b" ", 2)[1]), answered
    assert status == 413
    assert b"CHUNK_TOO_LARGE" in body
    # Answered within a little of the cap (socket buffers), not after the whole body.
    assert sent < LIMIT + 512 * 1024, sent


def test_stalled_body_times_out(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as sock:
        sock.sendall(
            b"POST /v1/repositories/t/m/chunks/missing HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"digests": ['
        )
        t0 = time.monotonic()
        status, body = status_and_body(sock)
    assert status == 408
    assert b"REQUEST_TIMEOUT" in body
    assert 0.4 < time.monotonic() - t0 < 5


def test_manifest_file_count_is_capped(address: tuple[str, int]) -> None:
    """More than MAX_MANIFEST_FILES entries is refused before any entry is looked at."""
    body = raw_manifest([{}] * (MAX_MANIFEST_FILES + 1))  # entries that are not even files
    host, port = address
    r = httpx.put(
        f"http://{host}:{port}/v1/repositories/m/manifests/{digest_bytes(body)}", content=body
    )
    assert r.status_code == 400, r.text
    error = r.json()["errors"][0]
    assert error["code"] == "MANIFEST_INVALID"
    assert str(MAX_MANIFEST_FILES) in error["message"]


def run_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[Any, str]:
    captured: dict[str, Any] = {}
    warnings: list[str] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: captured.update(kw))
    monkeypatch.setattr("wreg_server.logs.configure", lambda *a, **k: None)
    monkeypatch.setattr(cli.log, "warning", lambda msg, *a: warnings.append(msg % a))
    result = CliRunner().invoke(cli.app, ["serve", "--data", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    return captured, "\n".join(warnings)


def test_serve_sets_timeouts_and_connection_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WREG_MAX_CONNECTIONS", "77")
    kwargs, warned = run_serve(monkeypatch, tmp_path)
    assert kwargs["limit_concurrency"] == 77
    assert kwargs["timeout_keep_alive"] == 5
    assert kwargs["timeout_graceful_shutdown"] > 0
    assert warned == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "registry.internal"])  # noqa: S104 - host names under test, nothing binds them
def test_serve_warns_beyond_loopback_with_auth_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str
) -> None:
    _, warned = run_serve(monkeypatch, tmp_path, "--host", host)
    assert "WREG_AUTH is off" in warned
    assert host in warned
    monkeypatch.setenv("WREG_AUTH", "on")
    assert run_serve(monkeypatch, tmp_path, "--host", host)[1] == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_serve_quiet_on_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str
) -> None:
    assert run_serve(monkeypatch, tmp_path, "--host", host)[1] == ""
