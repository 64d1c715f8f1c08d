"""Cross-cutting API behaviour: error envelope, request ids, 404/405/500, health, docs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.server.server_support import Api, allowed_methods, assert_error, running
from wreg.core.errors import ErrorCode
from wreg_server.app import create_app
from wreg_server.settings import ServerSettings


def test_health(api: Api) -> None:
    for path in ("/healthz", "/readyz"):
        r = api.http.get(path)
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}


def test_openapi_and_docs(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    assert "/v1/repositories/{name}/chunks/{digest}" in schema["paths"]
    assert "/v1/chunks/{digest}" not in schema["paths"]  # WREG_CHUNK_NAMESPACE=global only
    assert "/v1/repositories/{name}/manifests/{digest}" in schema["paths"]
    assert api.http.get("/docs").status_code == 200


@pytest.mark.parametrize("path", ["/", "/nope", "/v1", "/v1/repositories/a/b/c/d", "/v2/chunks"])
def test_unknown_endpoint(api: Api, path: str) -> None:
    assert_error(api.http.get(path), 404, "NOT_FOUND")


def test_method_not_allowed(api: Api) -> None:
    for response in (api.http.post("/v1/repositories"), api.http.put("/healthz")):
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert allowed_methods(response) == ["GET"]


def test_request_id_is_generated(api: Api) -> None:
    ids = {api.http.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_request_id_is_echoed(api: Api) -> None:
    r = api.http.get("/healthz", headers={"x-request-id": "client-abc.123"})
    assert r.headers["x-request-id"] == "client-abc.123"
    r = api.http.get("/nope", headers={"x-request-id": "client-abc.124"})
    assert r.headers["x-request-id"] == "client-abc.124"


def test_insane_request_id_is_replaced(api: Api) -> None:
    r = api.http.get("/healthz", headers={"x-request-id": "x" * 500})
    assert r.headers["x-request-id"] != "x" * 500
    assert len(r.headers["x-request-id"]) == 32


@pytest.fixture
def broken_url(settings: ServerSettings) -> Iterator[str]:
    """A real server with two extra routes: one crashes, one raises a client-only code."""
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("kaboom")

    async def odd() -> None:
        raise ErrorCode.LOCAL_EMPTY.error("a client-only code")

    app.add_api_route("/boom", boom)
    app.add_api_route("/odd", odd)
    with running(app) as url:
        yield url


def test_unexpected_exception_is_internal(
    broken_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(base_url=broken_url) as client:
        r = client.get("/boom", headers={"x-request-id": "trace-me"})
        error = assert_error(r, 500, "INTERNAL")
        assert r.headers["x-request-id"] == "trace-me"
        assert error["detail"] == {"request_id": "trace-me"}
        assert "kaboom" not in r.text
        assert any("trace-me" in rec.getMessage() for rec in caplog.records)
        assert_error(client.get("/odd"), 500, "INTERNAL")
        # The server keeps serving.
        assert client.get("/healthz").status_code == 200
