"""The web UI in a real headless browser (Playwright driving Debian's chromium), against a
real ``wreg-server serve`` with auth on, on both deployments: SQLite + files and
PostgreSQL + S3 (moto).

The real model and its fine-tune are pushed with a push token; a reader logs in through
the form and walks repositories → repository → tag → manifest (with a diff against the
other tag) → storage, every figure checked against the JSON API (sizes, tag digests, file
sizes, stored bytes from chunk HEADs). A token of another team sees neither the
repository nor its pages (404); a login without the CSRF token or from another origin is
403; the cookie's flags are checked as the browser stored them. Each page is saved at
1280 and 390 px wide under ``.test-output/ui/`` (printed), and at 390 px the page itself
never scrolls sideways (tables scroll inside their box).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.services import chromium
from tests.services.moto import MotoS3
from tests.services.postgres import PostgresServer, in_ci
from wreg import Client
from wreg.core.manifest import Manifest
from wreg.testing.realdata import WEIGHTS_FILE, base_model, is_finetuned, read_header, variant
from wreg.testing.servers import RunningServer, run_wreg_server, start_server, upgrade_database

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / ".test-output" / "ui"
WIDTHS = (1280, 390)
MODEL = "team-a/minilm"
OTHER = "team-b/other"


@dataclass
class Registry:
    kind: str
    server: RunningServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, who: str = "reader") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def create_token(env: dict[str, str], name: str, scope: str) -> str:
    done = run_wreg_server("token", "create", name, "--scope", scope, "--json", env=env)
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


@pytest.fixture(scope="module", params=["sqlite", "postgres-s3"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp(f"ui-{request.param}")
    env = {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"}
    if request.param == "postgres-s3":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        env |= moto.env(moto.create_bucket()) | {
            "WREG_DATABASE_URL": postgres.url(postgres.create_database())
        }
        upgrade_database(root / "migrate", env)
    server = start_server(root / "data", env)
    try:
        cli_env = env | {"WREG_DATA": str(root / "data")}
        names = {
            "pusher": "push:*",
            "reader": "pull:team-a/*",
            "team-b": "pull:team-b/*",
        }
        tokens = {who: create_token(cli_env, who, scope) for who, scope in names.items()}
        cache = root / "cache"
        pusher = Client(server.url, token=tokens["pusher"], cache_dir=cache)
        pusher.push(base_model(), f"{MODEL}@base")
        pusher.push(variant("finetune"), f"{MODEL}@finetune")
        small = root / "other"
        small.mkdir()
        (small / "config.json").write_text('{"other": true}')
        pusher.push(small, f"{OTHER}@v1")
        yield Registry(request.param, server, tokens)
    finally:
        server.stop()


@contextmanager
def serving(html: str) -> Iterator[str]:
    """A one-page site on another 127.0.0.1 port (another origin); yields its URL."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def browser() -> Iterator[Browser]:
    try:
        executable = chromium.ensure()
    except chromium.ChromiumUnavailable as exc:
        if in_ci():
            pytest.fail(f"chromium is unavailable: {exc}", pytrace=False)
        pytest.skip(f"chromium is unavailable: {exc}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(chromium.LAUNCH_ARGS)
        )
        try:
            yield launched
        finally:
            launched.close()


def shoot(page: Page, kind: str, name: str) -> None:
    """Screenshots of the page at each width; at the narrow one, no sideways page scroll."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{kind}-{name}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{name} at {width} px is {scroll_width} px wide"
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def log_in(page: Page, registry: Registry, who: str) -> None:
    page.goto(f"{registry.url}/ui")
    assert page.url == f"{registry.url}/ui/login"  # no cookie yet: to the login form
    page.fill("#token", registry.tokens[who])
    page.click("#login")
    page.wait_for_url(f"{registry.url}/ui")
    assert page.inner_text("#viewer") == who


def data_bytes(page: Page, selector: str) -> int:
    value = page.get_attribute(selector, "data-bytes")
    assert value is not None, selector
    return int(value)


def manifest_of(api: httpx.Client, reference: str) -> Manifest:
    r = api.get(f"/v1/repositories/{MODEL}/manifests/{reference}")
    r.raise_for_status()
    return Manifest.from_json_bytes(r.content)


def stored_sizes(api: httpx.Client, digests: set[str]) -> dict[str, int]:
    """Each chunk's encoded size, from the API's HEAD (its Content-Length)."""

    def head(digest: str) -> tuple[str, int]:
        r = api.head(f"/v1/repositories/{MODEL}/chunks/{digest}")
        assert r.status_code == 200, digest
        return digest, int(r.headers["content-length"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(head, sorted(digests)))


def test_walk_the_ui_and_check_every_figure_against_the_api(registry: Registry) -> None:
    with registry.api() as api:
        tags = {
            t["tag"]: t["digest"] for t in api.get(f"/v1/repositories/{MODEL}/tags").json()["tags"]
        }
        base, tuned = manifest_of(api, "base"), manifest_of(api, "finetune")
        sizes = {c.digest: c.size for m in (base, tuned) for f in m.files for c in f.chunks}
        stored = stored_sizes(api, set(sizes))
    assert set(tags) == {"base", "finetune"}
    logical = base.total_size + tuned.total_size
    unique = sum(sizes.values())
    stored_total = sum(stored.values())
    assert stored_total < unique < logical  # the fine-tune shares chunks; zstd helps a little

    kind = registry.kind
    with browser() as launched:
        context = launched.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{registry.url}/ui/login")
        shoot(page, kind, "login")
        log_in(page, registry, "reader")

        cookie = next(c for c in context.cookies() if c["name"] == "wreg_ui")
        assert cookie["value"] == registry.tokens["reader"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/ui"
        assert cookie["secure"] is False  # plain http here; over TLS the server adds Secure
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it

        # Repositories: only team-a's, with its sizes.
        row = f'#repositories tr[data-name="{MODEL}"]'
        assert page.locator("#repositories tbody tr[data-name]").count() == 1
        assert page.get_attribute(f"{row} td[data-tags]", "data-tags") == "2"
        assert page.get_attribute(f"{row} td[data-manifests]", "data-manifests") == "2"
        assert data_bytes(page, f'{row} td[data-field="logical"]') == logical
        assert data_bytes(page, f'{row} td[data-field="stored"]') == stored_total
        shoot(page, kind, "repositories")
        page.fill("#search", "nothing-like-it")
        page.press("#search", "Enter")
        page.wait_for_url("**/ui?q=nothing-like-it")
        assert page.locator("#repositories tbody tr[data-name]").count() == 0
        page.fill("#search", "minilm")
        page.press("#search", "Enter")
        page.wait_for_url("**/ui?q=minilm")

        # The repository's tags, each with the digest the API reports.
        page.click(f"{row} a")
        page.wait_for_url("**/ui/repository?name=team-a%2Fminilm")
        shown = {
            r.get_attribute("data-tag"): r.get_attribute("data-digest")
            for r in page.locator("#tags tbody tr[data-tag]").all()
        }
        assert shown == tags
        assert page.inner_text("#tag-count").startswith("2 tags")
        shoot(page, kind, "repository")

        # The fine-tune's manifest: digest, files and their sizes, who pushed it.
        page.click('#tags tr[data-tag="finetune"] a')
        page.wait_for_url("**/ui/manifest?name=team-a%2Fminilm&ref=finetune")
        assert page.inner_text("#digest") == tags["finetune"]
        assert data_bytes(page, "#total-size") == tuned.total_size
        files = {
            r.get_attribute("data-path"): int(
                r.locator("td[data-bytes]").get_attribute("data-bytes") or -1
            )
            for r in page.locator("#files tbody tr").all()
        }
        assert files == {f.path: f.size for f in tuned.files}
        assert page.inner_text("#pushed-by") == "pusher"
        # Its tensors, as the safetensors header of the file pushed declares them.
        header = read_header(variant("finetune") / WEIGHTS_FILE)
        table = f'table.tensors[data-path="{WEIGHTS_FILE}"] tbody tr'
        tensors = {
            r.get_attribute("data-tensor"): (
                r.get_attribute("data-dtype"),
                r.get_attribute("data-shape"),
                int(r.locator("td[data-bytes]").get_attribute("data-bytes") or -1),
            )
            for r in page.locator(table).all()
        }
        assert tensors == {
            n: (t.dtype, ",".join(map(str, t.shape)), t.end - t.start)
            for n, t in header.tensors.items()
        }
        shoot(page, kind, "manifest")

        # Against the base: what changed, what is shared, byte for byte.
        page.fill("#against", "base")
        page.click("#compare")
        page.wait_for_url("**&against=base")
        known = base.chunk_digests()
        distinct = {c.digest: c.size for f in tuned.files for c in f.chunks}
        shared = sum(size for digest, size in distinct.items() if digest in known)
        assert data_bytes(page, "#bytes-shared") == shared
        assert data_bytes(page, "#bytes-new") == sum(distinct.values()) - shared
        # The tensors the fine-tune changed, and only those (by tensor digest).
        changed = {
            r.get_attribute("data-tensor") for r in page.locator("#tensor-diff tbody tr").all()
        }
        header = read_header(variant("finetune") / WEIGHTS_FILE)
        assert changed == {n for n in header.tensors if is_finetuned(n)}
        assert changed
        counts = page.inner_text("#tensor-diff-counts")
        assert f"{len(changed)} changed, {len(header.tensors) - len(changed)} unchanged" in counts
        status = {
            r.get_attribute("data-path"): r.get_attribute("data-status")
            for r in page.locator("#file-diff tbody tr").all()
        }
        old = {f.path: f.digest for f in base.files}
        assert status == {
            f.path: ("same" if old.get(f.path) == f.digest else "changed") for f in tuned.files
        }
        assert "changed" in status.values()
        shoot(page, kind, "manifest-diff")

        # Storage: logical vs unique vs stored, the repository's and the totals.
        page.click("nav >> text=Storage")
        page.wait_for_url("**/ui/storage")
        usage = f'#usage tr[data-name="{MODEL}"]'
        assert page.locator("#usage tbody tr[data-name]").count() == 1
        assert data_bytes(page, f'{usage} td[data-field="logical"]') == logical
        assert data_bytes(page, f'{usage} td[data-field="unique"]') == unique
        assert data_bytes(page, f'{usage} td[data-field="stored"]') == stored_total
        assert data_bytes(page, f'{usage} td[data-field="dedupe"]') == logical - unique
        assert data_bytes(page, f'{usage} td[data-field="compression"]') == unique - stored_total
        assert data_bytes(page, "#total-logical") == logical
        assert data_bytes(page, "#total-unique") == unique
        assert data_bytes(page, "#total-stored") == stored_total
        assert page.locator("#chart svg rect").count() == 3
        shoot(page, kind, "storage")

        # Logging out clears the cookie.
        page.click("#logout")
        page.wait_for_url("**/ui/login")
        assert not [c for c in context.cookies() if c["name"] == "wreg_ui"]
        context.close()
    print(f"\nUI screenshots: {SHOTS}")


def test_another_team_sees_neither_the_repository_nor_its_pages(registry: Registry) -> None:
    with browser() as launched:
        page = launched.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, registry, "team-b")
        names = [
            r.get_attribute("data-name") for r in page.locator("#repositories tr[data-name]").all()
        ]
        assert names == [OTHER]
        for path in (
            f"/ui/repository?name={MODEL}",
            f"/ui/manifest?name={MODEL}&ref=finetune",
            f"/ui/manifest?name={MODEL}&ref=base&against=finetune",
        ):
            response = page.goto(f"{registry.url}{path}")
            assert response is not None
            assert response.status == 404, path
            assert "not found" in page.inner_text("#error")
            assert "minilm" not in page.inner_text("main").replace(MODEL, "")
        shoot(page, registry.kind, "not-found")
        page.goto(f"{registry.url}/ui/storage")
        assert [
            r.get_attribute("data-name") for r in page.locator("#usage tr[data-name]").all()
        ] == [OTHER]


def test_login_needs_the_csrf_token_and_this_origin(registry: Registry) -> None:
    token = registry.tokens["reader"]
    with browser() as launched:
        context = launched.new_context()
        page = context.new_page()
        page.goto(f"{registry.url}/ui/login")
        csrf = page.get_attribute('input[name="csrf"]', "value") or ""
        own = {"Origin": registry.url}
        posts: list[tuple[dict[str, Any], dict[str, str]]] = [
            ({"token": token}, own),
            ({"token": token, "csrf": "f" * 64}, own),
            ({"token": token, "csrf": csrf}, {"Origin": "https://evil.example"}),
        ]
        for fields, headers in posts:
            r = page.request.post(f"{registry.url}/ui/login", form=fields, headers=headers)
            assert r.status == 403, (fields, headers)
        # A page of another origin (same site: 127.0.0.1, another port, where SameSite
        # does not help) submits a copy of the form with a valid token and this browser's
        # CSRF nonce cookie: refused, as the browser says where the form came from.
        form = (
            f'<form method="post" action="{registry.url}/ui/login">'
            f'<input name="token" value="{token}"><input name="csrf" value="{csrf}">'
            '<button id="go">go</button></form>'
        )
        with serving(form) as foreign:
            page.goto(foreign)
            with page.expect_navigation() as navigation:
                page.click("#go")
        assert navigation.value is not None
        assert navigation.value.status == 403
        assert not [c for c in context.cookies() if c["name"] == "wreg_ui"]
        context.close()
