"""The client sends small chunks in batches (``.../chunks/upload``, ``.../chunks/fetch``)
and large ones alone, still verifies every chunk of a batch, and falls back to one
request per chunk against a registry without the batched routes.

A counting proxy (in a thread) sits between ``wreg.Client`` and a real ``wreg-server``;
it can also flip a byte of a batch answer, or answer the batched routes 405 as a
registry from before them does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.proxy import forward
from wreg import Client
from wreg.core.errors import IntegrityError
from wreg.testing.servers import RunningServer
from wreg.testing.webapps import start_app

SMALL_FILES = 300  # each under CDC_MIN: one small chunk each
LARGE = 3 << 20  # one file cut by FastCDC into chunks of 256 KiB - 4 MiB


class CountingProxy:
    """Forwards everything; counts chunk requests by kind (``fetch``, ``upload``: the
    batched routes; ``get``, ``put``: single chunks)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        self.corrupt_fetch = False  # flip the last byte of the next batch answer
        self.old_server = False  # answer the batched routes as a registry without them
        self.unavailable = 0  # answer this many batched requests 503 (transient)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    def kind(self, method: str, path: str) -> str | None:
        if "/chunks/" not in path:
            return None
        tail = path.rsplit("/", 1)[1]
        if method == "POST" and tail in ("fetch", "upload", "missing"):
            return tail
        return {"GET": "get", "PUT": "put", "HEAD": "head"}.get(method)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=128 << 20)

        async def handle(request: web.Request) -> web.StreamResponse:
            kind = self.kind(request.method, request.path)
            if kind is not None:
                self.counts[kind] += 1
            if self.unavailable and kind in ("fetch", "upload"):
                self.unavailable -= 1
                return web.json_response(
                    {"errors": [{"code": "UNAVAILABLE", "message": "busy", "detail": None}]},
                    status=503,
                )
            if self.old_server and kind in ("fetch", "upload"):
                return web.json_response(
                    {"errors": [{"code": "METHOD_NOT_ALLOWED", "message": "no", "detail": None}]},
                    status=405,
                    headers={"Allow": "GET, HEAD, PUT"},
                )
            answer = await forward(session, self.upstream, request)
            payload = answer.body
            if kind == "fetch" and answer.status == 200 and self.corrupt_fetch and payload:
                self.corrupt_fetch = False
                payload = payload[:-1] + bytes([payload[-1] ^ 0x01])
            return web.Response(status=answer.status, body=payload, headers=answer.headers)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner, port = await start_app(app)
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        await self._stop.wait()
        await session.close()
        await runner.cleanup()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[CountingProxy]:
    with CountingProxy(server.url) as p:
        yield p


def make_model(root: Path) -> dict[str, bytes]:
    files = {f"small/{i:04d}.bin": os.urandom(100 + i) for i in range(SMALL_FILES)}
    files["large.bin"] = os.urandom(LARGE)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_small_chunks_travel_in_batches(proxy: CountingProxy, tmp_path: Path) -> None:
    files = make_model(tmp_path / "model")
    pushed = Client(proxy.url, cache_dir=tmp_path / "push-cache").push(
        tmp_path / "model", "batch/small@v1"
    )
    assert pushed.chunks_new >= SMALL_FILES
    large_chunks = pushed.chunks_new - SMALL_FILES  # FastCDC pieces, 256 KiB - 4 MiB
    assert 1 <= proxy.counts["upload"] <= 2 + large_chunks
    assert proxy.counts["put"] <= large_chunks
    proxy.counts.clear()
    result = Client(proxy.url, cache_dir=tmp_path / "pull-cache").pull(
        "batch/small@v1", tmp_path / "out"
    )
    assert read_tree(tmp_path / "out") == files
    assert result.chunks_downloaded == pushed.chunks_new
    assert 1 <= proxy.counts["fetch"] <= 2 + large_chunks
    assert proxy.counts["get"] <= large_chunks
    assert proxy.counts["fetch"] + proxy.counts["get"] < SMALL_FILES // 10


def test_a_flipped_byte_in_a_batch_is_an_integrity_error(
    proxy: CountingProxy, tmp_path: Path
) -> None:
    files = make_model(tmp_path / "model")
    del files["large.bin"]
    (tmp_path / "model" / "large.bin").unlink()
    Client(proxy.url, cache_dir=tmp_path / "push-cache").push(tmp_path / "model", "batch/flip@v1")
    proxy.corrupt_fetch = True
    client = Client(proxy.url, cache_dir=tmp_path / "pull-cache")
    with pytest.raises(IntegrityError) as caught:
        client.pull("batch/flip@v1", tmp_path / "out")
    assert "does not match" in str(caught.value)
    assert not (tmp_path / "out").exists() or read_tree(tmp_path / "out") == {}
    # Nothing unverified was kept: the next pull (no corruption) fetches and verifies it.
    client.pull("batch/flip@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files


def test_a_registry_without_batches_gets_one_request_per_chunk(
    proxy: CountingProxy, tmp_path: Path
) -> None:
    proxy.old_server = True
    files = make_model(tmp_path / "model")
    pushed = Client(proxy.url, cache_dir=tmp_path / "push-cache").push(
        tmp_path / "model", "batch/old@v1"
    )
    assert proxy.counts["upload"] >= 1  # tried, refused: then one PUT per chunk
    assert proxy.counts["put"] == pushed.chunks_new
    proxy.counts.clear()
    Client(proxy.url, cache_dir=tmp_path / "pull-cache").pull("batch/old@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    assert proxy.counts["get"] == pushed.chunks_new
    # A pull learns it from one batch, before its workers start, then stops asking.
    assert proxy.counts["fetch"] == 1


def test_a_failed_batch_is_retried_like_a_single_request(
    proxy: CountingProxy, tmp_path: Path
) -> None:
    files = make_model(tmp_path / "model")
    proxy.unavailable = 1
    Client(proxy.url, cache_dir=tmp_path / "push-cache").push(tmp_path / "model", "batch/retry@v1")
    assert proxy.unavailable == 0
    uploads = proxy.counts["upload"]
    proxy.unavailable = 1
    proxy.counts.clear()
    Client(proxy.url, cache_dir=tmp_path / "pull-cache").pull("batch/retry@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    assert proxy.unavailable == 0
    assert uploads >= 2  # the refused batch, sent again
    assert proxy.counts["fetch"] >= 2
    assert proxy.counts["get"] < SMALL_FILES // 10  # still batched after the retry
