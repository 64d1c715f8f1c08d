"""Bearer tokens and scopes (``wreg_server/auth``), on both deployments.

The matrix: for every route class, which of a handful of tokens (admin on everything,
push on ``team-a/*``, pull on everything, pull on ``team-a/*``) and no token at all get
through, are refused for lack of a token (401) or for lack of a scope (403).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.server.server_support import Api, Chunk, assert_error, file_of, running
from wreg.core.batch import encode_frames
from wreg.core.manifest import Manifest
from wreg_server.app import create_app
from wreg_server.auth import tokens
from wreg_server.auth.guard import PATH_PARAMETERS, required
from wreg_server.db.migrate import upgrade_engine
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.settings import ServerSettings


def in_index(settings: ServerSettings, action: Any) -> Any:
    """Run ``action(session)`` against the index ``settings`` names, from sync code."""

    async def main() -> Any:
        engine = create_engine(settings.database_url)
        try:
            if settings.is_sqlite:
                await upgrade_engine(engine)
            async with create_sessionmaker(engine)() as session:
                return await action(session)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def make_token(settings: ServerSettings, name: str, *scopes: str) -> str:
    async def create(session: Any) -> str:
        _, secret = await tokens.create(session, name, scopes)
        return secret

    secret: str = in_index(settings, create)
    return secret


@dataclass
class Registry:
    url: str
    settings: ServerSettings
    tokens: dict[str, str]
    a: Manifest
    b: Manifest
    chunk: Chunk

    def client(self, who: str | None) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


TOKENS = {
    "admin": ("admin:*",),
    "team-a-push": ("push:team-a/*",),
    "reader": ("pull:*",),
    "team-a-reader": ("pull:team-a/*",),
    "mixed": ("push:team-a/*", "pull:team-b/*"),
}


def start(settings: ServerSettings, **overrides: Any) -> Iterator[Registry]:
    s = settings.model_copy(update={"auth": "on", **overrides})
    with running(create_app(s)) as url:
        secrets = {name: make_token(s, name, *scopes) for name, scopes in TOKENS.items()}
        with Api(url) as api:
            api.http.headers["Authorization"] = f"Bearer {secrets['admin']}"
            a = api.push("team-a/m", ("f", b"team a weights"))
            b = api.push("team-b/m", ("f", b"team b weights"))
        yield Registry(url, s, secrets, a, b, Chunk.of(b"a brand new chunk"))


@pytest.fixture
def registry(settings: ServerSettings) -> Iterator[Registry]:
    yield from start(settings)


@pytest.fixture
def anonymous_registry(settings: ServerSettings) -> Iterator[Registry]:
    yield from start(settings, anonymous_pull=True)


WHO = (None, "admin", "team-a-push", "reader", "team-a-reader", "mixed")


def call(reg: Registry, who: str | None, request: str) -> httpx.Response:
    """One request of each route class, on ``team-a/m`` or ``team-b/m``."""
    method, _, what = request.partition(" ")
    repo = what.rsplit(" ", 1)[-1] if " " in what else ""
    manifest = reg.a if repo == "team-a/m" else reg.b
    with reg.client(who) as c:
        match what.split(" ")[0]:
            case "manifest":
                if method == "PUT":
                    body = manifest.to_json_bytes()
                    return c.put(
                        f"/v1/repositories/{repo}/manifests/{manifest.digest}", content=body
                    )
                return c.request(method, f"/v1/repositories/{repo}/manifests/{manifest.digest}")
            case "tag":
                url = f"/v1/repositories/{repo}/tags/{'latest' if method == 'GET' else 'v2'}"
                if method == "PUT":
                    return c.put(url, json={"digest": manifest.digest})
                if method == "DELETE":
                    c.put(url, json={"digest": manifest.digest})  # may itself be refused
                return c.request(method, url)
            case "tags":
                return c.get(f"/v1/repositories/{repo}/tags")
            case "chunk":
                chunks = f"/v1/repositories/{repo}/chunks"
                if method == "PUT":
                    return c.put(f"{chunks}/{reg.chunk.digest}", content=reg.chunk.encoded)
                return c.request(method, f"{chunks}/{manifest.files[0].chunks[0].digest}")
            case "fetch":
                digest = manifest.files[0].chunks[0].digest
                return c.post(f"/v1/repositories/{repo}/chunks/fetch", json={"digests": [digest]})
            case "upload":
                body = encode_frames([(reg.chunk.digest, reg.chunk.encoded)])
                return c.post(f"/v1/repositories/{repo}/chunks/upload", content=body)
            case "missing":
                return c.post(
                    f"/v1/repositories/{repo}/chunks/missing", json={"digests": [reg.chunk.digest]}
                )
            case "repositories":
                return c.get("/v1/repositories")
            case "tokens":
                return c.get("/v1/tokens")
            case "self":
                return c.get("/v1/tokens/self")
    raise AssertionError(request)


# request → the tokens it succeeds for (everyone else: 401 without a token, else 403)
MATRIX: dict[str, set[str | None]] = {
    "GET manifest team-a/m": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
    "GET manifest team-b/m": {"admin", "reader", "mixed"},
    "PUT manifest team-a/m": {"admin", "team-a-push", "mixed"},
    "PUT manifest team-b/m": {"admin"},
    "DELETE manifest team-b/m": {"admin"},
    "PUT tag team-a/m": {"admin", "team-a-push", "mixed"},
    "PUT tag team-b/m": {"admin"},
    "GET tag team-b/m": {"admin", "reader", "mixed"},
    "DELETE tag team-a/m": {"admin", "team-a-push", "mixed"},
    "DELETE tag team-b/m": {"admin"},
    "GET tags team-a/m": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
    "GET tags team-b/m": {"admin", "reader", "mixed"},
    "GET chunk team-a/m": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
    "GET chunk team-b/m": {"admin", "reader", "mixed"},
    "HEAD chunk team-b/m": {"admin", "reader", "mixed"},
    "PUT chunk team-a/m": {"admin", "team-a-push", "mixed"},
    "PUT chunk team-b/m": {"admin"},
    "POST fetch team-a/m": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
    "POST fetch team-b/m": {"admin", "reader", "mixed"},
    "POST upload team-a/m": {"admin", "team-a-push", "mixed"},
    "POST upload team-b/m": {"admin"},
    "POST missing team-a/m": {"admin", "team-a-push", "mixed"},
    "POST missing team-b/m": {"admin"},
    "GET repositories": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
    "GET tokens": {"admin"},
    "GET self": {"admin", "team-a-push", "reader", "team-a-reader", "mixed"},
}


@pytest.mark.parametrize("request_", list(MATRIX))
def test_scope_matrix(registry: Registry, request_: str) -> None:
    for who in WHO:
        r = call(registry, who, request_)
        if who in MATRIX[request_]:
            assert r.status_code < 400, (who, request_, r.status_code, r.text)
        elif who is None:
            assert r.status_code == 401, (request_, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            if r.request.method != "HEAD":
                assert_error(r, 401, "UNAUTHORIZED")
        else:
            assert r.status_code == 403, (who, request_, r.status_code, r.text)
            if r.request.method != "HEAD":
                assert_error(r, 403, "DENIED")


def test_delete_manifest_with_push_on_the_repository(registry: Registry) -> None:
    with registry.client("team-a-push") as c:
        r = c.delete(f"/v1/repositories/team-a/m/manifests/{registry.a.digest}")
    assert r.status_code == 204


def test_listing_shows_only_pullable_repositories(registry: Registry) -> None:
    seen = {}
    for who in ("admin", "reader", "team-a-push", "team-a-reader", "mixed"):
        with registry.client(who) as c:
            seen[who] = [r["name"] for r in c.get("/v1/repositories").json()["repositories"]]
    assert seen["admin"] == seen["reader"] == seen["mixed"] == ["team-a/m", "team-b/m"]
    assert seen["team-a-push"] == seen["team-a-reader"] == ["team-a/m"]


def test_push_cannot_create_a_repository_outside_its_glob(registry: Registry) -> None:
    chunk = Chunk.of(b"elsewhere")
    manifest = Manifest.build([file_of("f", chunk)])
    with registry.client("team-a-push") as c:
        chunks = "/v1/repositories/team-a/new/chunks"
        assert c.put(f"{chunks}/{chunk.digest}", content=chunk.encoded).status_code == 201
        ok = c.put(
            f"/v1/repositories/team-a/new/manifests/{manifest.digest}",
            content=manifest.to_json_bytes(),
            params={"tag": "v1"},
        )
        assert ok.status_code == 201, ok.text
        for name in ("team-b/new", "other", "team-ab/x"):
            r = c.put(
                f"/v1/repositories/{name}/manifests/{manifest.digest}",
                content=manifest.to_json_bytes(),
            )
            assert_error(r, 403, "DENIED")
            assert r.json()["errors"][0]["detail"]["token"] == "team-a-push"  # noqa: S105 - a token name in an error detail, not a secret


def test_open_routes_need_no_token(registry: Registry) -> None:
    with registry.client(None) as c:
        docs = ("/openapi.json", "/docs", "/docs/static/swagger-ui-bundle.js")
        for path in ("/healthz", "/readyz", "/metrics", *docs):
            assert c.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "header",
    ["Bearer wreg_" + "x" * 43, "Bearer nonsense", "Basic dXNlcjpwdw==", "Bearer", "wreg_abc"],
)
def test_invalid_tokens_are_401(registry: Registry, header: str) -> None:
    r = httpx.get(f"{registry.url}/v1/repositories", headers={"Authorization": header})
    assert_error(r, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_revoked_token_is_401_at_once_through_the_api(registry: Registry) -> None:
    with registry.client("reader") as c:
        assert c.get("/v1/repositories").status_code == 200  # now cached
        with registry.client("admin") as admin:
            assert admin.delete("/v1/tokens/reader").status_code == 204
        assert_error(c.get("/v1/repositories"), 401, "UNAUTHORIZED")


def test_revoked_elsewhere_is_401_once_the_cache_expires(settings: ServerSettings) -> None:
    for reg in start(settings, auth_cache_seconds=0):
        with reg.client("reader") as c:
            assert c.get("/v1/repositories").status_code == 200
            in_index(reg.settings, lambda s: tokens.revoke(s, "reader"))
            assert_error(c.get("/v1/repositories"), 401, "UNAUTHORIZED")


def test_anonymous_pull(anonymous_registry: Registry) -> None:
    reg = anonymous_registry
    for request_ in ("GET manifest team-b/m", "GET chunk team-b/m", "GET tags team-a/m"):
        assert call(reg, None, request_).status_code == 200, request_
    with reg.client(None) as c:
        names = [r["name"] for r in c.get("/v1/repositories").json()["repositories"]]
        assert names == ["team-a/m", "team-b/m"]
        assert c.get("/v1/tokens/self").json() == {
            "name": None,
            "scopes": ["pull:*"],
            "auth": True,
        }
    for request_ in (
        "PUT chunk team-a/m",
        "POST missing team-a/m",
        "PUT tag team-a/m",
        "GET tokens",
    ):
        r = call(reg, None, request_)
        assert_error(r, 401, "UNAUTHORIZED")
    # A bad token is not quietly downgraded to anonymous.
    r = httpx.get(
        f"{reg.url}/v1/repositories",
        headers={"Authorization": "Bearer wreg_nope1234567890123456789"},
    )
    assert_error(r, 401, "UNAUTHORIZED")
    # Tokens still work, with their own scopes.
    assert call(reg, "team-a-push", "PUT tag team-a/m").status_code == 200


def test_admin_api(registry: Registry) -> None:
    with registry.client("admin") as admin:
        r = admin.post("/v1/tokens", json={"name": "ci", "scopes": ["push:team-b/*"]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["name"] == "ci"
        assert created["scopes"] == ["push:team-b/*"]
        assert created["token"].startswith("wreg_")
        with httpx.Client(
            base_url=registry.url, headers={"Authorization": f"Bearer {created['token']}"}
        ) as ci:
            me = ci.get("/v1/tokens/self").json()
            assert me == {"name": "ci", "scopes": ["push:team-b/*"], "auth": True}
            r = ci.put("/v1/repositories/team-b/m/tags/ci", json={"digest": registry.b.digest})
            assert r.status_code == 200, r.text
            assert_error(ci.get("/v1/tokens"), 403, "DENIED")

        listed = {t["name"]: t for t in admin.get("/v1/tokens").json()["tokens"]}
        assert set(listed) == {*TOKENS, "ci"}
        assert all("token" not in t for t in listed.values())
        assert listed["ci"]["last_used_at"] is not None
        assert listed["ci"]["revoked_at"] is None

        assert_error(
            admin.post("/v1/tokens", json={"name": "ci", "scopes": ["pull:*"]}), 409, "TOKEN_EXISTS"
        )
        for bad in (["pull"], ["write:*"], ["pull:Team A"], []):
            r = admin.post("/v1/tokens", json={"name": "x", "scopes": bad})
            assert_error(r, 400, "TOKEN_INVALID")
        assert_error(
            admin.post("/v1/tokens", json={"name": "self", "scopes": ["pull:*"]}),
            400,
            "TOKEN_INVALID",
        )
        assert_error(admin.delete("/v1/tokens/nobody"), 404, "TOKEN_UNKNOWN")
        assert_error(admin.delete("/v1/tokens/bad%20name"), 400, "TOKEN_INVALID")

        assert admin.delete("/v1/tokens/ci").status_code == 204
        assert_error(admin.delete("/v1/tokens/ci"), 404, "TOKEN_UNKNOWN")
        listed = {t["name"]: t for t in admin.get("/v1/tokens").json()["tokens"]}
        assert listed["ci"]["revoked_at"] is not None
        # A revoked name can be reused.
        r = admin.post("/v1/tokens", json={"name": "ci", "scopes": ["pull:*"]})
        assert r.status_code == 201, r.text


def test_narrow_admin_cannot_manage_tokens(registry: Registry, settings: ServerSettings) -> None:
    secret = make_token(registry.settings, "team-a-admin", "admin:team-a/*")
    with httpx.Client(base_url=registry.url, headers={"Authorization": f"Bearer {secret}"}) as c:
        r = c.post("/v1/tokens", json={"name": "escalate", "scopes": ["admin:*"]})
        assert_error(r, 403, "DENIED")
        r = c.put("/v1/repositories/team-a/m/tags/x", json={"digest": registry.a.digest})
        assert r.status_code == 200


def test_tokens_are_stored_hashed(registry: Registry) -> None:
    async def rows(session: Any) -> list[str]:
        result = await session.execute(text("SELECT * FROM tokens"))
        return [repr(tuple(row)) for row in result]

    dump = "\n".join(in_index(registry.settings, rows))
    for secret in registry.tokens.values():
        assert tokens.hash_token(secret) in dump
        assert secret not in dump
        assert secret.removeprefix("wreg_")[:16] not in dump
    if registry.settings.is_sqlite:  # not even in the database files (WAL included)
        for path in Path(registry.settings.data).glob("index.sqlite*"):
            raw = path.read_bytes()
            for secret in registry.tokens.values():
                assert secret.encode() not in raw, path


def test_path_parameters_are_validated_before_scopes(registry: Registry) -> None:
    digest = registry.a.digest
    cases = [
        ("GET", f"/v1/repositories/Team-A/m/manifests/{digest}", "NAME_INVALID"),
        ("GET", "/v1/repositories/team-a/m/manifests/blake3:xyz", "DIGEST_INVALID"),
        ("GET", "/v1/repositories/team-a/m/manifests/-bad", "TAG_INVALID"),
        ("PUT", "/v1/repositories/team-a/m/tags/.hidden", "TAG_INVALID"),
        ("GET", "/v1/repositories/team-a/m/chunks/sha256:00", "DIGEST_INVALID"),
        ("DELETE", "/v1/repositories/team-a/%2E%2E/team-b/m/tags/v1", "NAME_INVALID"),
    ]
    with registry.client("team-a-push") as c:
        for method, path, code in cases:
            assert_error(c.request(method, path), 400, code)
        # An encoded slash names the same repository for the scope check and the route.
        assert_error(c.delete("/v1/repositories/team-b%2Fm/tags/latest"), 403, "DENIED")


def test_every_route_is_guarded_and_its_parameters_validated() -> None:
    schema = create_app(ServerSettings(data=Path("unused"))).openapi()
    assert len(schema["paths"]) >= 10
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            params = {p["name"]: "x" for p in op.get("parameters", []) if p["in"] == "path"}
            assert set(params) <= PATH_PARAMETERS, (method, path)
            need = required(method, path, params)
            if path in ("/healthz", "/readyz", "/metrics"):
                assert need.kind == "open"
            elif path.startswith("/v1/tokens") and path != "/v1/tokens/self":
                assert need.kind == "manage", (method, path)
            elif "/retention" in path:  # admin on the repository, whatever the method
                assert (need.kind, need.action) == ("repository_admin", "admin"), (method, path)
            else:
                assert need.kind in ("caller", "listing", "repository", "chunks"), (method, path)
    assert required("PATCH", "/v1/something-new", {}).kind == "manage"  # fail closed


def test_auth_off_acts_unrestricted(api: Api) -> None:
    assert api.http.get("/v1/tokens/self").json() == {
        "name": None,
        "scopes": ["admin:*"],
        "auth": False,
    }
    api.push("team-a/m", ("f", b"x"))
