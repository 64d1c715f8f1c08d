"""The chunk download hot path (``api/hotpath.py``) and the zero-copy send (``serving.py``).

The hot path must change no answer: every case it declines goes to the full route, and
every case it takes must be answered as the full route answers it. Which one answered is
read from ``wreg_chunk_downloads_total`` (counted only by the hot path).
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.server_support import Api, Chunk, assert_error, make_settings, running
from tests.server.test_auth import make_token
from wreg.core import batch
from wreg.core.mediatypes import LARGE_BATCHES_HEADER
from wreg_server import serving
from wreg_server.app import create_app
from wreg_server.settings import ServerSettings

# 12 MiB of incompressible bytes: more than a socket's send and receive buffers together.
BIG = Chunk.of(random.Random(11).randbytes(12 << 20))  # noqa: S311 - test data, not secrets
BIG_LIMITS = {"max_chunk_raw": 16 << 20, "max_chunk_encoded": 17 << 20}


def downloads(client: httpx.Client, how: str) -> int:
    """How many chunk GETs the hot path answered ``how`` (zerocopy, pathsend, read)."""
    text = client.get("/metrics").text
    found = re.search(rf'^wreg_chunk_downloads_total\{{path="{how}"\}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def _kept(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    return response.status_code, response.content, headers


@pytest.fixture
def files(tmp_path: Path) -> ServerSettings:
    return make_settings(tmp_path / "data")


def test_the_second_read_takes_the_hot_path_with_the_same_answer(files: ServerSettings) -> None:
    with running(create_app(files)) as url, Api(url) as api:
        chunk = Chunk.of(b"hot path weights" * 1000)
        api.upload(chunk)
        api.reference(chunk)
        path = f"{api.chunks()}/{chunk.digest}"
        first = api.http.get(path)  # the repository's digest set is loaded by this one
        assert downloads(api.http, "read") == 0
        second = api.http.get(path)
        assert downloads(api.http, "read") == 1
        assert _kept(first) == _kept(second)
        assert second.content == chunk.encoded
        assert second.headers["x-request-id"]
        # What the hot path declines goes to the full route, answered as before.
        assert api.http.get(path, headers={"If-None-Match": f'"{chunk.digest}"'}).status_code == 304
        never = Chunk.of(b"not referenced by any manifest")
        api.upload(never)  # stored, but readable through no repository
        assert_error(api.http.get(f"{api.chunks()}/{never.digest}"), 404, "CHUNK_UNKNOWN")
        elsewhere = api.http.get(f"{api.chunks('other/repo')}/{chunk.digest}")
        assert_error(elsewhere, 404, "CHUNK_UNKNOWN")
        assert api.http.head(path).status_code == 200
        assert downloads(api.http, "read") == 1
        metrics = api.http.get("/metrics").text
        route = 'route="/v1/repositories/{name}/chunks/{digest}",status="200"'
        assert re.search(rf'wreg_http_requests_total\{{method="GET",{route}\}} 2\.0', metrics)


def test_tokens_and_scopes_hold_on_the_hot_path(files: ServerSettings) -> None:
    settings = files.model_copy(update={"auth": "on"})
    with running(create_app(settings)) as url:
        admin = make_token(settings, "admin", "admin:*")
        reader = make_token(settings, "reader", "pull:team-a/*")
        other = make_token(settings, "other", "pull:team-b/*")
        with Api(url, "team-a/m") as api:
            api.http.headers["Authorization"] = f"Bearer {admin}"
            chunk = Chunk.of(b"team a's weights" * 100)
            api.upload(chunk)
            api.reference(chunk)
            path = f"{api.chunks()}/{chunk.digest}"
            assert api.http.get(path).content == chunk.encoded  # loads the digest set

            def get(token: str | None) -> httpx.Response:
                headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                return api.http.get(path, headers={"Authorization": "", **headers})

            before = downloads(api.http, "read")
            assert get(reader).content == chunk.encoded  # token not cached yet: full route
            assert get(reader).content == chunk.encoded  # cached: hot path
            assert downloads(api.http, "read") == before + 1
            for _ in range(2):
                assert_error(get(other), 403, "DENIED")
                assert_error(get("wreg_not_a_token"), 401, "UNAUTHORIZED")
                assert_error(api.http.get(path, headers={"Authorization": ""}), 401, "UNAUTHORIZED")
            api.http.delete("/v1/tokens/reader").raise_for_status()
            assert_error(get(reader), 401, "UNAUTHORIZED")  # revoked here: at once
            assert downloads(api.http, "read") == before + 1


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Api]]:
    """The app under ``wreg-server serve``'s own protocol (zero-copy send), 1 s stall limit."""
    settings = make_settings(tmp_path / "data", **BIG_LIMITS)
    guard = serving.ConnectionGuard(
        header_timeout=10, max_per_client=64, max_open=1024, send_timeout=1.0
    )
    with running(create_app(settings), http=serving.protocol_for(guard)) as url, Api(url) as api:
        api.upload(BIG)
        api.reference(BIG)
        yield url, api


def test_zero_copy_sends_whole_chunks_on_one_connection(served: tuple[str, Api]) -> None:
    _url, api = served
    path = f"{api.chunks()}/{BIG.digest}"
    for _ in range(4):  # keep-alive: each response must end exactly where it should
        r = api.http.get(path)
        assert r.status_code == 200
        assert r.content == BIG.encoded
        assert r.headers["content-length"] == str(len(BIG.encoded))
    assert downloads(api.http, "zerocopy") == 3
    assert api.http.get("/healthz").status_code == 200  # the connection is still in order


def _request(url: str, path: str, rcvbuf: int = 0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_a_client_that_stops_reading_is_cut_off_and_others_are_served(
    served: tuple[str, Api],
) -> None:
    url, api = served
    path = f"{api.chunks()}/{BIG.digest}"
    api.http.get(path).raise_for_status()  # the digest set is loaded: the next is hot
    stalled = _request(url, path, rcvbuf=4096)
    time.sleep(0.5)
    assert api.http.get(path).content == BIG.encoded  # served meanwhile
    time.sleep(2.0)  # past the 1 s stall limit
    received = 0
    with stalled:
        while piece := stalled.recv(1 << 20):
            received += len(piece)
    assert 0 < received < len(BIG.encoded)  # cut off: the connection ended early
    gone = _request(url, path)
    gone.recv(1000)
    gone.close()  # hangs up mid-body
    assert api.http.get(path).content == BIG.encoded


def test_batched_fetch_takes_the_hot_path_with_the_full_routes_answer(tmp_path: Path) -> None:
    """``POST .../chunks/fetch``: frames sent with sendfile, byte for byte the full
    route's answer; whatever the hot path declines (an unknown digest, a malformed body)
    reaches the full route with its body intact."""
    settings = make_settings(tmp_path / "data", **BIG_LIMITS)
    guard = serving.ConnectionGuard(
        header_timeout=10, max_per_client=64, max_open=1024, send_timeout=5.0
    )
    small = Chunk.of(b"small weights " * 500)
    with running(create_app(settings), http=serving.protocol_for(guard)) as url, Api(url) as api:
        for chunk in (BIG, small):
            api.upload(chunk)
        api.reference(BIG, small)
        path = f"{api.chunks()}/fetch"
        ask = {"digests": [BIG.digest, small.digest, BIG.digest]}
        full = api.http.post(path, json=ask)  # loads the digest set: the next one is hot
        assert downloads(api.http, "zerocopy-batch") == 0
        hot = api.http.post(path, json=ask)
        assert downloads(api.http, "zerocopy-batch") == 3
        assert _kept(hot) == _kept(full)
        frames = list(batch.frames(hot.content, max_count=3, max_length=len(BIG.encoded)))
        assert [(d, bytes(b)) for d, b in frames] == [
            (BIG.digest, BIG.encoded),
            (small.digest, small.encoded),
            (BIG.digest, BIG.encoded),
        ]
        assert hot.headers[LARGE_BATCHES_HEADER] == "yes"
        assert api.http.get("/healthz").status_code == 200  # the connection is in order
        never = Chunk.of(b"stored, in no manifest")
        api.upload(never)
        unknown = api.http.post(path, json={"digests": [small.digest, never.digest]})
        assert_error(unknown, 404, "CHUNK_UNKNOWN")
        assert_error(api.http.post(path, json={"digests": ["nope"]}), 400, "DIGEST_INVALID")
        extra = api.http.post(path, json={"digests": [small.digest], "more": 1})
        assert extra.status_code == 400
        elsewhere = api.http.post(f"{api.chunks('other/repo')}/fetch", json=ask)
        assert_error(elsewhere, 404, "CHUNK_UNKNOWN")
        assert downloads(api.http, "zerocopy-batch") == 3


def test_batched_fetch_keeps_tokens_and_scopes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", auth="on")
    guard = serving.ConnectionGuard(header_timeout=10, max_per_client=64, max_open=1024)
    with running(create_app(settings), http=serving.protocol_for(guard)) as url:
        admin = make_token(settings, "admin", "admin:*")
        reader = make_token(settings, "reader", "pull:team-a/*")
        other = make_token(settings, "other", "pull:team-b/*")
        chunk = Chunk.of(b"tenant weights " * 800)
        with Api(url, repository="team-a/model") as api:
            api.http.headers["Authorization"] = f"Bearer {admin}"
            api.upload(chunk)
            api.reference(chunk)
            path = f"{api.chunks()}/fetch"
            ask = {"digests": [chunk.digest]}

            def post(token: str) -> httpx.Response:
                return api.http.post(path, json=ask, headers={"Authorization": f"Bearer {token}"})

            for _ in range(2):  # the second one finds the token cached: the hot path
                assert post(reader).status_code == 200
                assert_error(post(other), 403, "DENIED")
            assert downloads(api.http, "zerocopy-batch") >= 1
            assert_error(
                api.http.post(path, json=ask, headers={"Authorization": ""}), 401, "UNAUTHORIZED"
            )


def test_large_batches_off_drops_the_header_from_both_routes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", large_batches=False)
    guard = serving.ConnectionGuard(header_timeout=10, max_per_client=64, max_open=1024)
    chunk = Chunk.of(b"behind a CDN " * 900)
    with running(create_app(settings), http=serving.protocol_for(guard)) as url, Api(url) as api:
        api.upload(chunk)
        api.reference(chunk)
        ask = {"digests": [chunk.digest]}
        full = api.http.post(f"{api.chunks()}/fetch", json=ask)
        hot = api.http.post(f"{api.chunks()}/fetch", json=ask)
        assert downloads(api.http, "zerocopy-batch") == 1
        for answer in (full, hot):
            assert answer.status_code == 200
            assert LARGE_BATCHES_HEADER not in answer.headers
