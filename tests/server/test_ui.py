"""The web UI (``wreg_server/ui``) over HTTP, without a browser, on both deployments.

A repository with 10 000 tags is paged (keyset) and searched by prefix; the login form's
CSRF and origin checks; the cookie's flags; what a token may see; and that the UI's
cookie has no power on the JSON API. The browser walk is ``tests/e2e/test_ui_browser.py``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

# The TLS test's self-signed certificate for 127.0.0.1, made with ``cryptography``.
from tests.e2e.test_tls import _certificate
from tests.server.server_support import Api, running
from wreg_server.app import create_app
from wreg_server.auth import tokens
from wreg_server.db.migrate import upgrade_engine
from wreg_server.db.models import ManifestRow, Repository, Tag
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.settings import ServerSettings

T = TypeVar("T")
MANY = 10_000
TAG_ROW = re.compile(r'<tr data-tag="([^"]+)" data-digest="([^"]+)">')


def in_index(settings: ServerSettings, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``action(session)`` on the index ``settings`` names, from sync code."""

    async def main() -> T:
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


def add_tags(settings: ServerSettings, name: str, digest: str, count: int) -> None:
    """``count`` tags ``t-00000``… on manifest ``digest`` of ``name``, in one statement."""

    async def action(session: AsyncSession) -> None:
        repo_id = await session.scalar(select(Repository.id).where(Repository.name == name))
        manifest_id = await session.scalar(
            select(ManifestRow.id).where(ManifestRow.digest == digest)
        )
        now = datetime.now(UTC)
        rows = [
            {"repository_id": repo_id, "name": f"t-{i:05d}", "manifest_id": manifest_id}
            | {"updated_at": now}
            for i in range(count)
        ]
        await session.execute(insert(Tag), rows)
        await session.commit()

    in_index(settings, action)


def make_token(settings: ServerSettings, name: str, *scopes: str) -> str:
    async def create(session: AsyncSession) -> str:
        _, secret = await tokens.create(session, name, scopes)
        return secret

    return in_index(settings, create)


def tag_rows(html: str) -> list[tuple[str, str]]:
    return TAG_ROW.findall(html)


def next_link(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" id="next-page"', html)
    return unescape(found.group(1)) if found else None


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html
    return found.group(1)


def test_tags_page_pages_and_searches_10000_tags(
    api: Api, base_url: str, settings: ServerSettings
) -> None:
    manifest = api.push("big/tags", ("w.bin", b"weights" * 100), tag=None)
    add_tags(settings, "big/tags", manifest.digest, MANY)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        first = http.get("/ui/repository", params={"name": "big/tags"})
        assert first.status_code == 200
        assert "render;dur=" in first.headers["server-timing"]
        rows = tag_rows(first.text)
        assert [t for t, _ in rows] == [f"t-{i:05d}" for i in range(100)]
        assert {d for _, d in rows} == {manifest.digest}
        assert f"{MANY} tags" in first.text
        link = next_link(first.text)
        assert link == "/ui/repository?name=big%2Ftags&after=t-00099"

        # Follow the links to page 3: keyset pages continue exactly where the last ended.
        second = http.get(link)
        assert [t for t, _ in tag_rows(second.text)] == [f"t-{i:05d}" for i in range(100, 200)]
        assert 'id="first-page"' in second.text
        third = http.get(next_link(second.text) or "")
        assert tag_rows(third.text)[0][0] == "t-00200"

        # The last page has no next link.
        last = http.get("/ui/repository", params={"name": "big/tags", "after": "t-09949"})
        assert [t for t, _ in tag_rows(last.text)] == [f"t-{i:05d}" for i in range(9950, MANY)]
        assert next_link(last.text) is None

        # Prefix search, itself paged: t-012* is 100 tags (one page), t-01* 1000 (ten).
        found = http.get("/ui/repository", params={"name": "big/tags", "q": "t-012"})
        assert [t for t, _ in tag_rows(found.text)] == [f"t-{i:05d}" for i in range(1200, 1300)]
        assert "100 tags starting with" in found.text
        assert next_link(found.text) is None
        wide = http.get("/ui/repository", params={"name": "big/tags", "q": "t-01"})
        assert next_link(wide.text) == "/ui/repository?name=big%2Ftags&q=t-01&after=t-01099"
        none = http.get("/ui/repository", params={"name": "big/tags", "q": "zzz"})
        assert tag_rows(none.text) == []
        assert "0 tags" in none.text

        # Hostile input gets a clear page, not a 500.
        long = http.get("/ui/repository", params={"name": "big/tags", "q": "x" * 129})
        assert long.status_code == 400
        assert "longer than 128" in long.text
        assert http.get("/ui/repository", params={"name": "Bad Name"}).status_code == 400
        assert http.get("/ui/repository", params={"name": "no/such"}).status_code == 404


@dataclass
class AuthUi:
    url: str
    settings: ServerSettings
    team_a: str
    team_b: str


@pytest.fixture
def auth_ui(settings: ServerSettings) -> Iterator[AuthUi]:
    settings = settings.model_copy(update={"auth": "on", "auth_cache_seconds": 0})
    admin = make_token(settings, "admin", "admin:*")
    team_a = make_token(settings, "team-a-reader", "pull:team-a/*")
    team_b = make_token(settings, "team-b-reader", "pull:team-b/*")
    with running(create_app(settings)) as url:
        with Api(url) as api:
            api.http.headers["Authorization"] = f"Bearer {admin}"
            api.push("team-a/model", ("w.bin", b"a" * 5000))
            api.push("team-b/model", ("w.bin", b"b" * 5000))
        yield AuthUi(url, settings, team_a, team_b)


def login(http: httpx.Client, token: str, **headers: str) -> httpx.Response:
    page = http.get("/ui/login")
    assert page.status_code == 200
    origin = {"Origin": str(http.base_url).rstrip("/")}
    return http.post(
        "/ui/login",
        data={"token": token, "csrf": csrf_of(page.text)},
        headers=origin | headers,
    )


def test_login_sets_a_strict_cookie_and_shows_only_what_the_token_may_pull(
    auth_ui: AuthUi,
) -> None:
    with httpx.Client(base_url=auth_ui.url, timeout=30) as http:
        assert http.get("/ui").status_code == 303  # to the login page
        done = login(http, auth_ui.team_a)
        assert done.status_code == 303, done.text
        cookie = next(
            v for k, v in done.headers.multi_items() if k == "set-cookie" and "wreg_ui=" in v
        )
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/ui"} <= flags
        assert "secure" not in flags  # plain http: a Secure cookie would never come back
        home = http.get("/ui")
        assert 'data-name="team-a/model"' in home.text
        assert "team-b" not in home.text
        assert "team-b" not in http.get("/ui/storage").text
        hidden = http.get("/ui/manifest", params={"name": "team-b/model", "ref": "latest"})
        assert hidden.status_code == 404
        assert http.get("/ui/repository", params={"name": "team-b/model"}).status_code == 404
        # Logging out clears the cookie: back to the login page.
        out = http.post(
            "/ui/logout",
            data={"csrf": csrf_of(home.text)},
            headers={"Origin": auth_ui.url},
        )
        assert out.status_code == 303
        assert http.get("/ui").status_code == 303


def test_login_is_403_without_csrf_token_or_from_another_origin(auth_ui: AuthUi) -> None:
    with httpx.Client(base_url=auth_ui.url, timeout=30) as http:
        page = http.get("/ui/login")
        csrf = csrf_of(page.text)
        own = {"Origin": auth_ui.url}
        cases: list[tuple[dict[str, Any], dict[str, str]]] = [
            ({"token": auth_ui.team_a}, own),  # no CSRF token
            ({"token": auth_ui.team_a, "csrf": "0" * 64}, own),  # a wrong one
            ({"token": auth_ui.team_a, "csrf": csrf}, {"Origin": "https://evil.example"}),
            ({"token": auth_ui.team_a, "csrf": csrf}, {"Referer": "https://evil.example/x"}),
            ({"token": auth_ui.team_a, "csrf": csrf}, {}),  # neither Origin nor Referer
        ]
        for data, headers in cases:
            r = http.post("/ui/login", data=data, headers=headers)
            assert r.status_code == 403, (data, headers)
            assert "wreg_ui=" not in r.headers.get("set-cookie", "")
        # The same form from this origin (Referer alone will do) logs in.
        ok = http.post(
            "/ui/login",
            data={"token": auth_ui.team_a, "csrf": csrf},
            headers={"Referer": f"{auth_ui.url}/ui/login"},
        )
        assert ok.status_code == 303
        # An unknown token is refused on the page, with no cookie.
        bad = login(http, "wreg_" + "x" * 43)
        assert bad.status_code == 401
        assert "unknown or revoked" in bad.text


def test_the_ui_cookie_has_no_power_on_the_api(auth_ui: AuthUi) -> None:
    with httpx.Client(base_url=auth_ui.url, timeout=30) as http:
        assert login(http, auth_ui.team_a).status_code == 303
        assert http.cookies.get("wreg_ui") == auth_ui.team_a
        # Sent to the API by hand (the browser would not: Path=/ui), it is ignored.
        cookie = {"Cookie": f"wreg_ui={auth_ui.team_a}"}
        for path in ("/v1/repositories", "/v1/repositories/team-a/model/tags/latest"):
            r = httpx.get(f"{auth_ui.url}{path}", headers=cookie, timeout=30)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # The bearer header still works, of course.
        bearer = {"Authorization": f"Bearer {auth_ui.team_a}"}
        r = httpx.get(f"{auth_ui.url}/v1/repositories", headers=bearer, timeout=30)
        assert [e["name"] for e in r.json()["repositories"]] == ["team-a/model"]


def test_a_forged_cookie_is_no_login(auth_ui: AuthUi) -> None:
    for value in ("wreg_" + "x" * 43, "x" * 5000, "not a token"):
        r = httpx.get(f"{auth_ui.url}/ui", cookies={"wreg_ui": value}, timeout=30)
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login"


def test_over_tls_the_cookies_are_secure(settings: ServerSettings, tmp_path: Path) -> None:
    """Served over https (uvicorn's TLS: the request's scheme), both cookies get Secure."""
    settings = settings.model_copy(update={"auth": "on", "auth_cache_seconds": 0})
    token = make_token(settings, "tls-reader", "pull:*")
    cert, key = _certificate(tmp_path)
    app = create_app(settings)
    with (
        running(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url,
        httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert)) as http,
    ):
        assert url.startswith("https://")
        done = login(http, token)
        assert done.status_code == 303, done.text
        cookies = [v for k, v in done.headers.multi_items() if k == "set-cookie"]
        assert len(cookies) == 2  # the token and a fresh CSRF nonce
        for cookie in cookies:
            flags = {f.strip().lower() for f in cookie.split(";")[1:]}
            assert {"secure", "httponly", "samesite=strict", "path=/ui"} <= flags, cookie
