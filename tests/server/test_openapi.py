"""The API's documentation as a live ``wreg-server serve`` gives it out.

``/docs`` works with no way out to the internet (every file it loads comes from the
registry itself); ``/openapi.json`` follows the conventions generators rely on (bearer
auth, explicit 4xx responses with one shared error schema, binary bodies); and a client
generated from it with a standard generator (openapi-python-client) talks to the server.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from wreg import Client
from wreg.testing.servers import RunningServer, start_server

REPO = "team/documented"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
METHODS = {"get", "put", "post", "delete", "head", "patch"}
OPEN = {"/healthz", "/readyz", "/metrics"}


@dataclass
class Pushed:
    server: RunningServer
    manifest: str  # the digest REPO@v1 points at


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    root = tmp_path_factory.mktemp("openapi")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    server = start_server(root / "data")
    try:
        result = Client(server.url, cache_dir=root / "cache").push(model, f"{REPO}@v1")
        yield Pushed(server, result.manifest)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def schema(pushed: Pushed) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{pushed.server.url}/openapi.json").json()
    return found


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if method in METHODS:
                yield method, path, op


# -- /docs -----------------------------------------------------------------------------


def test_docs_load_only_from_the_registry(pushed: Pushed) -> None:
    base = pushed.server.url
    page = httpx.get(f"{base}/docs")
    assert page.status_code == 200
    html = page.text
    assert "SwaggerUIBundle" in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    # Nothing absolute pointing elsewhere (a CDN, the swagger.io validator badge).
    for url in re.findall(r"""https?://[^\s"'<>)]+""", html):
        assert url.startswith(base), url
    assert '"validatorUrl": null' in html
    spec = re.search(r"url: '([^']+)'", html)
    assert spec is not None
    for asset in [*assets, spec.group(1)]:
        url = urljoin(f"{base}/docs", asset)
        assert urlsplit(url).netloc == urlsplit(base).netloc, url
        answer = httpx.get(url)
        assert answer.status_code == 200, url
        assert answer.content, url


# -- /openapi.json ---------------------------------------------------------------------


def test_schema_declares_bearer_auth(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    for method, path, op in operations(schema):
        if path in OPEN:
            assert "security" not in op, (method, path)
        else:
            # A token, or none where the registry runs with WREG_AUTH=off.
            assert {"bearer": []} in op["security"], (method, path)


def test_schema_errors_are_explicit_and_share_one_schema(schema: dict[str, Any]) -> None:
    envelopes = [
        name
        for name, s in schema["components"]["schemas"].items()
        if "errors" in s.get("properties", {})
    ]
    assert envelopes == ["Error"]
    error = schema["components"]["schemas"]["Error"]
    item = error["properties"]["errors"]["items"]
    assert set(item["required"]) == {"code", "message", "detail"}
    assert "TAG_UNKNOWN" in item["properties"]["code"]["enum"]
    for method, path, op in operations(schema):
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        expected = {"default"}
        if path not in OPEN:
            expected |= {"401", "403"}
        if "{" in path:
            expected |= {"400", "404"}
        if "requestBody" in op:
            expected |= {"400", "413"}
        assert expected <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status == "default" or status.startswith("4"):
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (
                    method,
                    path,
                    status,
                )
                assert response["description"], (method, path, status)


def test_schema_binary_bodies(schema: dict[str, Any]) -> None:
    binary = {"type": "string", "format": "binary"}
    chunk = schema["paths"]["/v1/repositories/{name}/chunks/{digest}"]
    assert chunk["put"]["requestBody"]["content"] == {
        "application/octet-stream": {"schema": binary}
    }
    (got,) = chunk["get"]["responses"]["200"]["content"].values()
    assert got["schema"] == binary
    batch = schema["paths"]["/v1/repositories/{name}/chunks/upload"]["post"]
    assert batch["requestBody"]["content"]["application/octet-stream"]["schema"] == binary
    fetched = schema["paths"]["/v1/repositories/{name}/chunks/fetch"]["post"]["responses"]["200"]
    assert [c["schema"] for c in fetched["content"].values()] == [binary]


def test_operation_ids_are_the_route_names(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids))
    assert {
        "list_repositories",
        "get_tag",
        "put_chunk",
        "get_manifest",
        "get_manifest_head",
    } <= set(ids)


# -- a generated client ----------------------------------------------------------------


def test_a_generated_client_works(pushed: Pushed, tmp_path: Path) -> None:
    """openapi-python-client (a dev dependency) builds a package from the live schema; its
    calls list the repository pushed, read its tag, and parse a 404 as the error envelope."""
    base = pushed.server.url
    (tmp_path / "schema.json").write_bytes(httpx.get(f"{base}/openapi.json").content)
    config = tmp_path / "generator.yaml"
    config.write_text("package_name_override: wreg_api\npost_hooks: []\n")
    done = subprocess.run(  # noqa: S603 - this interpreter, a dev dependency
        [
            *(sys.executable, "-m", "openapi_python_client", "generate"),
            *("--path", str(tmp_path / "schema.json"), "--meta", "none"),
            *("--output-path", str(tmp_path / "wreg_api"), "--config", str(config)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        api = importlib.import_module("wreg_api")
        list_repositories = importlib.import_module("wreg_api.api.repositories.list_repositories")
        get_tag = importlib.import_module("wreg_api.api.tags.get_tag")
        list_tags = importlib.import_module("wreg_api.api.tags.list_tags")
        with api.Client(base_url=base) as client:
            listed = list_repositories.sync(client=client)
            assert [r.name for r in listed.repositories] == [REPO]
            assert listed.repositories[0].tags == ["v1"]
            tag = get_tag.sync(name=REPO, tag="v1", client=client)
            assert tag.digest == pushed.manifest
            tags = list_tags.sync(name=REPO, client=client)
            assert [(t.tag, t.digest) for t in tags.tags] == [("v1", pushed.manifest)]
            missing = get_tag.sync_detailed(name=REPO, tag="v9", client=client)
            assert missing.status_code == 404
            (error,) = missing.parsed.errors
            assert error.code == "TAG_UNKNOWN"
            assert "v9" in error.message
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "wreg_api" or m.startswith("wreg_api.")]:
            del sys.modules[name]
