"""``/metrics`` as Prometheus scrapes it from a live ``wreg-server serve`` after a push: no
``*_created`` twin series, and ``route`` labels spelled as the API (and its OpenAPI
schema) spells the routes — ``{name}``, not the router's ``{name:path}``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from wreg import Client
from wreg.testing.servers import start_server


def test_metrics_after_a_push(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(400_000))
    server = start_server(tmp_path / "data")
    try:
        Client(server.url, cache_dir=tmp_path / "cache").push(model, "team/scraped@v1")
        httpx.get(f"{server.url}/v1/repositories/team/scraped/tags/v1").raise_for_status()
        paths = set(httpx.get(f"{server.url}/openapi.json").json()["paths"])
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()

    assert "_created" not in text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert not [s.name for s in samples if s.name.endswith("_created")]

    routes = {s.labels["route"] for s in samples if s.name == "wreg_http_requests_total"}
    assert "/v1/repositories/{name}/manifests/{digest}" in routes
    assert "/v1/repositories/{name}/tags/{tag}" in routes
    assert routes & {
        "/v1/repositories/{name}/chunks/{digest}",
        "/v1/repositories/{name}/chunks/upload",
    }
    assert not [r for r in routes if re.search(r"\{\w+:", r)]
    assert routes <= paths | {"unmatched"}, routes - paths
    # The byte counters and the histogram name routes the same way.
    for name in ("wreg_http_request_bytes_total", "wreg_http_request_duration_seconds_count"):
        assert {s.labels["route"] for s in samples if s.name == name} <= paths | {"unmatched"}
