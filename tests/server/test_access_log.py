"""Quiet default logs: a push's chunk requests are DEBUG access lines, everything else INFO.

A real ``wreg-server serve`` (JSON log lines, so each is parsed, not grepped) takes a real
push from ``wreg.Client``: at the default level its log shows the push's missing-chunks
query, manifest and tag requests but not one line per chunk; a chunk request that
failed is still INFO; under ``--log-level debug`` the chunk lines are there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from wreg import Client
from wreg.testing.servers import start_server

CHUNK_ROUTES = {
    "/v1/repositories/{name}/chunks/{digest}",
    "/v1/repositories/{name}/chunks/upload",
    "/v1/repositories/{name}/chunks/fetch",
}
UNKNOWN = "blake3:" + "0" * 64


def access_lines(log: Path) -> list[dict[str, Any]]:
    """The ``wreg_server.access`` lines of a JSON server log."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "wreg_server.access"]


def push_and_fail_once(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    """Serve (with ``args``), push a model of several chunks, GET an unknown chunk, stop;
    the access lines logged."""
    model = tmp_path / "model"
    model.mkdir()
    for i in range(3):
        (model / f"shard-{i}.bin").write_bytes(os.urandom(300_000))
    log = tmp_path / "server.log"
    server = start_server(tmp_path / "data", {"WREG_LOG_FORMAT": "json"}, args=args, log=log)
    try:
        Client(server.url, cache_dir=tmp_path / "cache").push(model, "team/quiet@v1")
        missing = httpx.get(f"{server.url}/v1/repositories/team/quiet/chunks/{UNKNOWN}")
        assert missing.status_code == 404
    finally:
        server.stop()
    return access_lines(log)


def test_chunk_requests_are_debug_and_the_rest_info(tmp_path: Path) -> None:
    lines = push_and_fail_once(tmp_path)
    assert all(line["level"] != "debug" for line in lines)  # the default level is info
    info = {(line["method"], line["route"], line["status"]) for line in lines}
    assert ("POST", "/v1/repositories/{name}/chunks/missing", 200) in info
    assert any(route == "/v1/repositories/{name}/manifests/{digest}" for _, route, _ in info)
    chunk_lines = [line for line in lines if line["route"] in CHUNK_ROUTES]
    # The only chunk request at INFO is the one that failed.
    assert [(line["method"], line["status"], line["path"]) for line in chunk_lines] == [
        ("GET", 404, f"/v1/repositories/team/quiet/chunks/{UNKNOWN}")
    ]


def test_debug_shows_the_chunk_requests(tmp_path: Path) -> None:
    lines = push_and_fail_once(tmp_path, "--log-level", "debug")
    debug = [line for line in lines if line["level"] == "debug"]
    assert debug, lines
    assert {line["route"] for line in debug} <= CHUNK_ROUTES
    assert all(line["status"] < 400 for line in debug)
    pushed = sum(line["bytes_in"] for line in debug if line["method"] in ("PUT", "POST"))
    assert pushed > 0  # the chunks' bytes travelled in the lines that went quiet
