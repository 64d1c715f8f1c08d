"""What an HTTP cache may keep (``api/caching.py``), ``If-None-Match`` on manifests, and
the token check an auth-aware cache in front asks (``api/routes/authcheck.py``).

On a real server over SQLite only: none of this depends on the index or the store.
The nginx cache itself, in front of a real server: ``tests/e2e/test_cache_in_front.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.server_support import Chunk, assert_error, file_of, make_settings, running
from tests.server.test_auth import make_token
from wreg.core.manifest import Manifest
from wreg_server.app import create_app

YEAR = "max-age=31536000, immutable"
TOKENS = {
    "admin": ("admin:*",),
    "team-a-reader": ("pull:team-a/*",),
    "team-a-push": ("push:team-a/*",),
}


@dataclass
class Registry:
    url: str
    tokens: dict[str, str]
    manifest: Manifest
    other: Manifest
    chunk: Chunk

    def client(self, who: str | None = "admin") -> httpx.Client:
        headers = {}
        if who is not None and self.tokens:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def push(c: httpx.Client, name: str, data: bytes, tag: str) -> tuple[Manifest, Chunk]:
    """One file of one chunk, through the repository-scoped chunk routes."""
    chunk = Chunk.of(data)
    r = c.put(f"/v1/repositories/{name}/chunks/{chunk.digest}", content=chunk.encoded)
    assert r.status_code in (200, 201), r.text
    manifest = Manifest.build([file_of("f", chunk)])
    r = c.put(
        f"/v1/repositories/{name}/manifests/{manifest.digest}",
        content=manifest.to_json_bytes(),
        params={"tag": tag},
    )
    assert r.status_code in (200, 201), r.text
    return manifest, chunk


def start(tmp_path: Path, **overrides: Any) -> Iterator[Registry]:
    settings = make_settings(tmp_path / "data", **overrides)
    with running(create_app(settings)) as url:
        secrets = {}
        if settings.auth_enabled:
            secrets = {n: make_token(settings, n, *s) for n, s in TOKENS.items()}
        reg = Registry(url, secrets, Manifest.build([]), Manifest.build([]), Chunk.of(b""))
        with reg.client() as c:
            reg.manifest, reg.chunk = push(c, "team-a/m", b"team a weights", "v1")
            reg.other, _ = push(c, "team-a/m", b"team a weights, v2", "v2")
            push(c, "team-b/m", b"team b weights", "v1")
        yield reg


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from start(tmp_path, auth="on")


# -- Cache-Control ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "audience"),
    [
        ({"auth": "off"}, "public"),
        ({"auth": "on"}, "private"),  # a shared cache must not serve it to anyone else
        ({"auth": "on", "anonymous_pull": True}, "public"),  # anyone may read it anyway
    ],
    ids=["auth-off", "auth-on", "anonymous-pull"],
)
def test_cache_control_of_every_answer(
    tmp_path: Path, overrides: dict[str, Any], audience: str
) -> None:
    for reg in start(tmp_path, **overrides):
        repo = "/v1/repositories/team-a/m"
        expected = {
            f"GET {repo}/chunks/{reg.chunk.digest}": f"{audience}, {YEAR}",
            f"HEAD {repo}/chunks/{reg.chunk.digest}": f"{audience}, {YEAR}",
            f"GET {repo}/manifests/{reg.manifest.digest}": f"{audience}, {YEAR}",
            f"HEAD {repo}/manifests/{reg.manifest.digest}": f"{audience}, {YEAR}",
            f"GET {repo}/manifests/v1": f"{audience}, no-cache",
            f"HEAD {repo}/manifests/v1": f"{audience}, no-cache",
            f"GET {repo}/tags/v1": "no-store",
            f"GET {repo}/tags": "no-store",
            "GET /v1/repositories": "no-store",
            "GET /v1/tokens/self": "no-store",
            "GET /v1/tokens": "no-store",
        }
        with reg.client() as c:
            for request, cache_control in expected.items():
                method, _, url = request.partition(" ")
                r = c.request(method, url)
                assert r.status_code == 200, (request, r.text)
                assert r.headers["cache-control"] == cache_control, request
            r = c.put(f"{repo}/tags/v3", json={"digest": reg.manifest.digest})
            assert r.headers["cache-control"] == "no-store"
            created = c.post("/v1/tokens", json={"name": "t", "scopes": ["pull:*"]})
            assert created.status_code == 201, created.text
            assert created.headers["cache-control"] == "no-store"  # a secret in the body


# -- If-None-Match on manifests -----------------------------------------------------------


def test_manifest_etag_and_if_none_match(registry: Registry) -> None:
    digest = registry.manifest.digest
    etag = f'"{digest}"'
    with registry.client() as c:
        for reference in (digest, "v1"):
            url = f"/v1/repositories/team-a/m/manifests/{reference}"
            for method in ("GET", "HEAD"):
                r = c.request(method, url)
                assert r.status_code == 200
                assert r.headers["etag"] == etag  # by tag: the digest the tag points at
                for header in (etag, f"W/{etag}", f'"blake3:{"0" * 64}", {etag}', "*"):
                    r = c.request(method, url, headers={"If-None-Match": header})
                    assert r.status_code == 304, (method, reference, header)
                    assert r.content == b""
                    assert r.headers["etag"] == etag
                    assert r.headers["wreg-manifest-digest"] == digest
                    assert "cache-control" in r.headers
                r = c.request(method, url, headers={"If-None-Match": f'"blake3:{"0" * 64}"'})
                assert r.status_code == 200
            assert c.get(url).content == registry.manifest.to_json_bytes()

        # Move the tag: the old ETag no longer matches, the new one does.
        r = c.put("/v1/repositories/team-a/m/tags/v1", json={"digest": registry.other.digest})
        assert r.status_code == 200, r.text
        url = "/v1/repositories/team-a/m/manifests/v1"
        r = c.get(url, headers={"If-None-Match": etag})
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{registry.other.digest}"'
        assert r.content == registry.other.to_json_bytes()
        r = c.get(url, headers={"If-None-Match": f'"{registry.other.digest}"'})
        assert r.status_code == 304

        # A 304 is no way to learn of a manifest the repository does not have.
        r = c.get(f"/v1/repositories/team-b/m/manifests/{digest}", headers={"If-None-Match": "*"})
        assert_error(r, 404, "MANIFEST_UNKNOWN")
    with registry.client("team-a-reader") as c:
        r = c.get("/v1/repositories/team-b/m/manifests/v1", headers={"If-None-Match": "*"})
        assert_error(r, 403, "DENIED")


# -- the token check for a cache in front ------------------------------------------------


def check(c: httpx.Client, uri: str | None, method: str | None = "GET") -> httpx.Response:
    headers = {}
    if method is not None:
        headers["X-Original-Method"] = method
    if uri is not None:
        headers["X-Original-URI"] = uri
    return c.get("/v1/auth/check", headers=headers)


def test_auth_check_grants_reads_the_token_may_make(registry: Registry) -> None:
    a, b = "/v1/repositories/team-a/m", "/v1/repositories/team-b/m"
    chunk, digest = registry.chunk.digest, registry.manifest.digest
    reads = [
        f"{a}/chunks/{chunk}",
        f"{a}/manifests/{digest}",
        f"{a}/manifests/v1",
        f"{a}/tags/v1",
        f"{a}/tags",
        f"{a}/manifests/{digest}?tag=x&y=%2F..",  # the query is not part of the path
        "/v1/repositories/team-a%2Fm/manifests/v1",  # decoded as the app decodes it
        "/v1/repositories/team-a/%6D/manifests/v1",
    ]
    for who in ("admin", "team-a-reader", "team-a-push"):
        with registry.client(who) as c:
            for uri in reads:
                for method in ("GET", "HEAD", "get"):
                    r = check(c, uri, method)
                    assert r.status_code == 204, (who, uri, method, r.text)
                    assert r.content == b""
                    assert r.headers["cache-control"] == "no-store"
            r = c.head(
                "/v1/auth/check", headers={"X-Original-Method": "GET", "X-Original-URI": reads[0]}
            )
            assert r.status_code == 204
    with registry.client("team-a-reader") as c:
        for uri in (
            f"{b}/chunks/{chunk}",
            f"{b}/manifests/v1",
            f"{b}/tags",
            "/v1/repositories/team-b%2Fm/tags",
        ):
            r = check(c, uri)
            detail = assert_error(r, 403, "DENIED")["detail"]
            assert detail == {"token": "team-a-reader", "needed": "pull 'team-b/m'"}, uri


def test_auth_check_refuses_everything_but_reads_under_a_repository(
    registry: Registry,
) -> None:
    a = "/v1/repositories/team-a/m"
    digest = registry.manifest.digest
    refused: list[tuple[str | None, str | None]] = [
        ("PUT", f"{a}/manifests/{digest}"),  # writes: the registry checks those itself
        ("DELETE", f"{a}/tags/v1"),
        ("POST", f"{a}/chunks/missing"),
        ("OPTIONS", f"{a}/tags"),
        ("GET", "/v1/repositories"),  # listings, tokens, anything else
        ("GET", "/v1/tokens"),
        ("GET", "/v1/tokens/self"),
        ("GET", "/v1/auth/check"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/nothing-here"),
        ("GET", f"/v1/chunks/{registry.chunk.digest}"),  # global namespace: not served
        # Targets that are not plain paths, or that climb.
        ("GET", f"http://evil.example{a}/tags"),
        ("GET", f"{a[1:]}/tags"),
        ("GET", "*"),
        ("GET", ""),
        ("GET", f"{a}/tags#frag"),
        ("GET", f"{a}/../../team-b/m/tags"),
        ("GET", f"{a}/%2E%2E/%2e%2e/team-b/m/tags"),
        ("GET", f"{a}/./tags"),
        # Path parameters that do not validate.
        ("GET", "/v1/repositories/Team-A/m/tags"),
        ("GET", f"{a}/manifests/blake3:xyz"),
        ("GET", f"{a}/chunks/not-a-digest"),
        # Missing headers: a misconfigured proxy fails closed.
        (None, f"{a}/tags"),
        ("GET", None),
    ]
    with registry.client("admin") as c:  # even admin: the check only judges cached reads
        for method, uri in refused:
            r = check(c, uri, method)
            assert_error(r, 403, "DENIED")


def test_auth_check_without_a_valid_token(registry: Registry) -> None:
    uri = f"/v1/repositories/team-a/m/manifests/{registry.manifest.digest}"
    with registry.client(None) as c:
        r = check(c, uri)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"].startswith("Bearer")  # nginx passes it on
        r = c.get(
            "/v1/auth/check",
            headers={
                "Authorization": f"Bearer wreg_{'0' * 43}",
                "X-Original-Method": "GET",
                "X-Original-URI": uri,
            },
        )
        assert_error(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "overrides", [{"auth": "off"}, {"auth": "on", "anonymous_pull": True}], ids=["off", "anon"]
)
def test_auth_check_when_anyone_may_read(tmp_path: Path, overrides: dict[str, Any]) -> None:
    for reg in start(tmp_path, **overrides):
        with reg.client(None) as c:
            assert check(c, "/v1/repositories/team-b/m/manifests/v1").status_code == 204
            assert_error(check(c, "/v1/repositories/team-b/m/tags/v1", "PUT"), 403, "DENIED")
