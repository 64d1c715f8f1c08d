"""Operations: /metrics, /readyz on a dead index, JSON logs, and the ``gc`` command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.server_support import Api, Chunk, assert_error, make_settings, running
from wreg import Client, NotFound
from wreg.core.errors import ErrorCode
from wreg.testing.procs import free_port
from wreg.testing.servers import run_wreg_server, start_server
from wreg_server.app import create_app
from wreg_server.logs import JsonFormatter, RequestIdFilter, request_id_var


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


ROUTE = "/v1/repositories/{name}/chunks"  # the route label: templates as the API spells them


def test_metrics(api: Api) -> None:
    a, b = Chunk.of(os.urandom(5000)), Chunk.of(os.urandom(7000))
    api.upload(a)
    api.upload(a)  # already present (answered like a first upload)
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": [a.digest, b.digest]})
    assert r.json()["missing"] == [b.digest]
    api.http.get("/nope")

    # A request is counted when it has completely finished, which can be a moment after
    # its response arrived (dependency clean-up runs after the body is sent).
    deadline = time.monotonic() + 10
    while True:
        r = api.http.get("/metrics")
        assert r.status_code == 200
        text = r.text
        if metric(text, "wreg_http_response_bytes_total", route=f"{ROUTE}/missing") > 0:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert r.headers["content-type"].startswith("text/plain")
    route = f"{ROUTE}/{{digest}}"
    assert metric(text, "wreg_http_requests_total", method="PUT", route=route, status="201") == 2
    assert metric(text, "wreg_http_requests_total", method="GET", route="unmatched", status="404")
    assert metric(text, "wreg_http_request_bytes_total", route=route) == 2 * len(a.encoded)
    assert metric(text, "wreg_chunk_uploads_total", result="new") == 1
    assert metric(text, "wreg_chunk_uploads_total", result="present") == 1
    assert metric(text, "wreg_chunk_upload_raw_bytes_total", result="new") == len(a.raw)
    assert metric(text, "wreg_chunks_queried_total") == 2
    assert metric(text, "wreg_chunks_missing_total") == 1
    assert metric(text, "wreg_chunk_bytes_present_total") == len(a.raw)
    assert "wreg_http_request_duration_seconds_bucket" in text


def test_readyz_is_503_when_the_index_is_unreachable(tmp_path: Path) -> None:
    dead = f"postgresql+asyncpg://wreg@127.0.0.1:{free_port()}/wreg"
    settings = make_settings(tmp_path / "data", database_url=dead)
    with running(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/readyz"), 503, "UNAVAILABLE")


def test_client_errors_carry_the_request_id(base_url: str) -> None:
    with pytest.raises(NotFound) as caught:
        Client(base_url).delete("nobody@v1")
    assert caught.value.code is ErrorCode.NAME_UNKNOWN
    assert caught.value.request_id
    assert len(caught.value.request_id) == 32
    assert f"(request {caught.value.request_id})" in str(caught.value)


def test_json_formatter() -> None:
    record = logging.LogRecord(
        "wreg_server.x", logging.WARNING, __file__, 1, "hi %s", ("yo",), None
    )
    record.route = "/v1/chunks/{digest}"
    token = request_id_var.set("req-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "hi yo"
    assert doc["level"] == "warning"
    assert doc["request_id"] == "req-1"
    assert doc["route"] == "/v1/chunks/{digest}"
    assert doc["time"].endswith("+00:00")


def test_serve_writes_json_access_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = start_server(tmp_path / "data", {"WREG_LOG_FORMAT": "json"}, log=log_path)
    try:
        r = httpx.get(
            f"{server.url}/v1/repositories/x/tags/y",
            headers={"x-request-id": "trace-42"},
            timeout=10,
        )
        assert r.headers["x-request-id"] == "trace-42"
    finally:
        server.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    access = [d for d in lines if d.get("request_id") == "trace-42"]
    assert access, lines
    line = access[-1]
    assert line["method"] == "GET"
    assert line["status"] == 404
    assert line["route"] == "/v1/repositories/{name}/tags/{tag}"
    assert line["duration_ms"] >= 0
    assert {"time", "level", "msg"} <= set(line)


def test_gc_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data)
    chunk = Chunk.of(os.urandom(4000))
    with running(create_app(settings)) as url, Api(url) as api:
        api.upload(chunk)

    def gc(*args: str) -> subprocess.CompletedProcess[str]:
        return run_wreg_server("gc", "--data", str(data), *args, timeout=60)

    out = gc()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("deleted 0 chunks")
    assert "kept 1 unreferenced" in out.stdout
    out = gc("--grace", "0", "--dry-run")
    assert out.returncode == 0
    assert out.stdout.startswith("would delete 1 chunks, ")
    prom = tmp_path / "gc.prom"
    out = gc("--grace", "0", "--json", "--metrics-file", str(prom))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["dry_run"] is False
    assert doc["chunks_deleted"] == 1
    assert doc["bytes_freed"] == len(chunk.encoded)
    assert doc["raw_bytes_freed"] == len(chunk.raw)
    assert doc["grace_s"] == 0
    assert f"wreg_gc_last_run_bytes_freed {float(len(chunk.encoded))}" in prom.read_text()
    out = gc("--grace", "soon")
    assert out.returncode == 2
    assert "invalid duration" in out.stderr
