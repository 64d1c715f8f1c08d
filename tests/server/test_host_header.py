"""No response builds a ``Location`` from the request's ``Host`` header.

Starlette's default answers a path with a trailing slash with a 307 to the same path on
whatever host the request named, so anyone (or any cache in between) could be sent to
``evil.example``; the chunk route's presigned redirect must name the object store.
"""

from __future__ import annotations

import pytest

from tests.server.server_support import Api, Chunk

EVIL = "evil.example"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz/"),
        ("POST", "/v1/tokens/"),
        ("POST", "/v1/repositories/m/chunks/missing/"),
        ("GET", "/v1/repositories/"),
        ("GET", "/v1/repositories/m/tags/"),
        ("GET", "/v1/repositories/m/manifests/latest/"),
    ],
)
def test_no_redirect_to_the_host_header(api: Api, method: str, path: str) -> None:
    r = api.http.request(method, path, headers={"Host": EVIL}, content=b"{}")
    assert EVIL not in r.headers.get("location", ""), r.headers
    assert not r.is_redirect, (r.status_code, r.headers)
    assert r.status_code in (400, 404, 405), r.text
    assert "errors" in r.json()


def test_chunk_redirect_names_the_store_not_the_host(api: Api) -> None:
    chunk = Chunk.of(b"redirect me" * 100)
    api.upload(chunk)
    api.reference(chunk)
    r = api.http.get(f"{api.chunks()}/{chunk.digest}", headers={"Host": EVIL})
    assert r.status_code in (200, 307), r.text
    assert EVIL not in r.headers.get("location", "")
