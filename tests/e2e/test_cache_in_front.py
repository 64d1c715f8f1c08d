"""Caches in front never leak (issue 10): a real nginx cache in front of a real
``wreg-server serve`` with ``WREG_AUTH=on``.

* A plain ``proxy_cache`` that honours ``Cache-Control`` (no idea of tokens): what a
  token pulled is never handed to a client without one — the registry says ``private``.
  (With answers ``public, immutable``, as before issue 10, the second client got a cached
  200.)
* The README's auth-aware cache, ``deploy/nginx-cache.conf`` as shipped: ``auth_request``
  to ``/v1/auth/check`` on every read, chunks and manifests by digest cached for a year.
  Without a token: 401 and no bytes; a token of another team: 403; the right token: a
  cache hit the second time, and ``wreg push``/``wreg pull`` through it work.

nginx is Debian's ``nginx-light``, installed on first use when missing (``tests/services``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.commands import run, wreg
from tests.e2e.test_auth_cli import create_token
from tests.e2e.test_roundtrip import assert_same_tree
from tests.services import nginx
from tests.services.postgres import in_ci
from wreg import Client
from wreg.core.manifest import Manifest
from wreg.testing.procs import free_port
from wreg.testing.servers import RunningServer, start_server

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx-cache.conf"
# What the shipped config names that a test run must replace (each exactly once).
UPSTREAM, LISTEN, CACHE = "server 127.0.0.1:8080;", "listen 80;", "/var/cache/nginx/wreg "

PLAIN = """
proxy_cache_path {cache} levels=1:2 keys_zone=plain:1m;
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass {upstream};
        proxy_cache plain;
        add_header X-Cache-Status $upstream_cache_status always;
    }}
}}
"""


@dataclass
class Pushed:
    server: RunningServer
    tokens: dict[str, str]
    manifest: Manifest
    src: Path

    def repo_url(self, what: str) -> str:
        return f"/v1/repositories/team-a/m/{what}"

    @property
    def chunk_urls(self) -> list[str]:
        digests = dict.fromkeys(c.digest for f in self.manifest.files for c in f.chunks)
        return [self.repo_url(f"chunks/{d}") for d in digests]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """An auth-on server (no token cache: revocations bite at once) holding ``team-a/m@v1``."""
    root = tmp_path_factory.mktemp("cache-in-front")
    server = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    try:
        tokens = {
            "pusher": create_token(server, "pusher", "push:team-a/*"),
            "reader": create_token(server, "reader", "pull:team-a/*"),
            "other-team": create_token(server, "other-team", "pull:team-b/*"),
        }
        src = root / "model"
        src.mkdir()
        # Several MiB: chunks of 1 MiB and more travel as single, cacheable GETs (smaller
        # ones in batches, which no cache keeps).
        (src / "weights.bin").write_bytes(os.urandom(6 << 20))
        (src / "config.json").write_text('{"layers": 2}')
        client = Client(server.url, tokens["pusher"], cache_dir=root / "push-cache")
        result = client.push(src, "team-a/m@v1")
        with httpx.Client(base_url=server.url, headers=bearer(tokens["reader"])) as c:
            body = c.get(f"/v1/repositories/team-a/m/manifests/{result.manifest}").content
        yield Pushed(server, tokens, Manifest.from_json_bytes(body), src)
    finally:
        server.stop()


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """nginx, installed (apt, as root) on first use; its tests fail on CI, skip elsewhere."""
    try:
        return nginx.find() or nginx.install()
    except nginx.NginxUnavailable as exc:
        if in_ci():
            pytest.fail(f"nginx is unavailable: {exc}", pytrace=False)
        pytest.skip(f"nginx is unavailable: {exc}")


def start_front(root: Path, http: str, port: int) -> nginx.Nginx:
    return nginx.start(root, http, f"http://127.0.0.1:{port}/healthz")


def shipped_config(upstream: str, port: int, cache: Path) -> str:
    """``deploy/nginx-cache.conf`` with its upstream, port and cache directory replaced."""
    text = CONF.read_text(encoding="utf-8")
    host_port = upstream.removeprefix("http://")
    for old, new in (
        (UPSTREAM, f"server {host_port};"),
        (LISTEN, f"listen 127.0.0.1:{port};"),
        (CACHE, f"{cache} "),
    ):
        assert text.count(old) == 1, f"{CONF.name} no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


def test_readme_shows_the_shipped_config() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```nginx\n{CONF.read_text(encoding='utf-8')}```" in readme


def test_a_plain_cache_never_serves_a_private_answer_to_anyone_else(
    nginx_binary: str, pushed: Pushed, tmp_path: Path
) -> None:
    port = free_port()
    http = PLAIN.format(cache=tmp_path / "cache", port=port, upstream=pushed.server.url)
    front = start_front(tmp_path / "nginx", http, port)
    try:
        urls = [*pushed.chunk_urls, pushed.repo_url(f"manifests/{pushed.manifest.digest}")]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            bodies = {}
            for url in urls:
                for _ in range(2):  # never a hit, even for the token that fetched it
                    r = c.get(url, headers=bearer(pushed.tokens["reader"]))
                    assert r.status_code == 200, (url, r.text)
                    assert r.headers["cache-control"].startswith("private,")
                    assert r.headers["x-cache-status"] != "HIT", url
                    bodies[url] = r.content
            for url in urls:
                r = c.get(url)
                assert r.status_code == 401, (url, r.status_code, r.headers)  # from upstream
                assert r.headers["x-cache-status"] != "HIT"
                assert bodies[url] not in r.content
                assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert not [line for line in front.access_log() if line[1] == "HIT"]
    finally:
        front.stop()


def test_the_auth_aware_cache(nginx_binary: str, pushed: Pushed, tmp_path: Path) -> None:
    port = free_port()
    http = shipped_config(pushed.server.url, port, tmp_path / "cache")
    front = start_front(tmp_path / "nginx", http, port)
    url = f"http://127.0.0.1:{port}"
    manifest_url = pushed.repo_url(f"manifests/{pushed.manifest.digest}")
    urls = [*pushed.chunk_urls, manifest_url]
    try:
        with httpx.Client(base_url=url, timeout=30) as c:

            def refused(token: str | None, status: int) -> None:
                for u in [*urls, pushed.repo_url("manifests/v1"), pushed.repo_url("tags")]:
                    for method in ("GET", "HEAD") if "/tags" not in u else ("GET",):
                        r = c.request(method, u, headers=bearer(token))
                        assert r.status_code == status, (method, u, r.status_code)
                        assert r.headers.get("x-cache-status") != "HIT"
                        if method == "GET" and u in bodies:
                            assert bodies[u] not in r.content
                        if status == 401:
                            assert r.headers["www-authenticate"].startswith("Bearer")

            bodies: dict[str, bytes] = {}
            refused(None, 401)
            refused(pushed.tokens["other-team"], 403)

            reader = bearer(pushed.tokens["reader"])
            for u in urls:
                first = c.get(u, headers=reader)
                assert first.status_code == 200, (u, first.text)
                assert first.headers["x-cache-status"] == "MISS"
                second = c.get(u, headers=reader)
                assert second.headers["x-cache-status"] == "HIT", u
                assert second.content == first.content
                bodies[u] = first.content
                head = c.head(u, headers=reader)
                assert (head.status_code, head.headers["x-cache-status"]) == (200, "HIT")
                etag = first.headers["etag"]
                again = c.get(u, headers={**reader, "If-None-Match": etag})
                assert again.status_code == 304, u
            assert Manifest.from_json_bytes(bodies[manifest_url]) == pushed.manifest
            # By tag, tags and listings go through, never cached (no X-Cache-Status).
            for u in (pushed.repo_url("manifests/v1"), pushed.repo_url("tags"), "/v1/repositories"):
                r = c.get(u, headers=reader)
                assert r.status_code == 200, (u, r.text)
                assert "x-cache-status" not in r.headers

            # Now that everything is cached, still nothing without the right token.
            refused(None, 401)
            refused(pushed.tokens["other-team"], 403)
            refused(f"wreg_{'0' * 43}", 401)
            # A token revoked after its reads were cached gets nothing more.
            gone = create_token(pushed.server, "short-lived", "pull:team-a/*")
            assert c.get(urls[0], headers=bearer(gone)).headers["x-cache-status"] == "HIT"
            env = os.environ | {"WREG_DATA": str(pushed.server.data)}
            out = run("wreg-server", "token", "revoke", "short-lived", env=env)
            assert out.returncode == 0, out.stderr
            refused(gone, 401)

        # The CLI through the cache: push (writes pass through), then pull twice from
        # empty node caches; the second pull's chunks all come from nginx's cache.
        env = {k: v for k, v in os.environ.items() if k != "WREG_TOKEN"}
        env |= {"WREG_URL": url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
        push_env = env | {"WREG_TOKEN": pushed.tokens["pusher"], "WREG_CACHE": str(tmp_path / "c0")}
        out = wreg("push", str(pushed.src), "team-a/m@via-nginx", env=push_env)
        assert out.returncode == 0, out.stderr
        second_pull: list[list[str]] = []
        for n in (1, 2):
            pull_env = env | {
                "WREG_TOKEN": pushed.tokens["reader"],
                "WREG_CACHE": str(tmp_path / f"c{n}"),
            }
            mark = len(front.access_log())
            out = wreg("pull", "team-a/m@via-nginx", "-o", str(tmp_path / f"out{n}"), env=pull_env)
            assert out.returncode == 0, out.stderr
            assert_same_tree(pushed.src, tmp_path / f"out{n}")
            second_pull = front.access_log()[mark:]
        out = wreg(
            "pull",
            "team-a/m@via-nginx",
            "-o",
            str(tmp_path / "out3"),
            env=env | {"WREG_CACHE": str(tmp_path / "c3")},
        )
        assert out.returncode != 0
        assert not (tmp_path / "out3" / "weights.bin").exists()
    finally:
        front.stop()
    # The second pull's single-chunk GETs (the cacheable ones; small chunks travel in
    # uncached batches) all came from nginx's cache.
    hits = [line for line in second_pull if line[2] == "GET" and "/chunks/" in line[3]]
    assert hits, second_pull
    assert {(line[0], line[1]) for line in hits} == {("200", "HIT")}, hits
    assert re.search(r"\bauth request unexpected status\b", front.error_log()) is None
