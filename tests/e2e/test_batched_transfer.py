"""The client sends small chunks in batches (``.../chunks/upload``, ``.../chunks/fetch``),
fetches large ones in runs (batches read frame by frame) where the registry sends them
as cheaply as single GETs and alone elsewhere, still verifies every chunk of a batch,
and falls back to one request per chunk against a registry without the batched routes.

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
from wreg.core.mediatypes import LARGE_BATCHES_HEADER
from wreg.core.sizes import MiB
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
        self.costly_batches = False  # drop the header saying large batches are cheap
        self.gets: list[str] = []  # the digests of single-chunk GETs
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
            if kind == "get":
                self.gets.append(request.path.rsplit("/", 1)[1])
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
            headers = answer.headers
            if self.costly_batches:
                headers = {k: v for k, v in headers.items() if k.lower() != LARGE_BATCHES_HEADER}
            return web.Response(status=answer.status, body=payload, headers=headers)

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
    # How many batches depends on how far hashing runs ahead of the uploaders (a loaded
    # machine drains the queue in smaller groups), so the bound is the point: far fewer
    # requests than chunks.
    assert proxy.counts["upload"] >= 1
    assert proxy.counts["put"] <= large_chunks
    assert proxy.counts["upload"] + proxy.counts["put"] < SMALL_FILES // 10
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


def make_large(root: Path, size: int = 24 << 20) -> tuple[dict[str, bytes], dict[str, int]]:
    """A model of one file cut mostly into large chunks; (files, digest -> size of its
    chunks of at least 1 MiB, which travel in runs)."""
    from wreg.core.chunking import plan_file
    from wreg.core.digest import digest_bytes

    root.mkdir(parents=True)
    data = os.urandom(size)
    (root / "weights.bin").write_bytes(data)
    large = {
        digest_bytes(data[s.offset : s.offset + s.length]): s.length
        for s in plan_file(root / "weights.bin")
        if s.length >= MiB
    }
    assert len(large) >= 4
    return {"weights.bin": data}, large


def test_large_chunks_travel_in_runs_unless_told_not_to(
    proxy: CountingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, large = make_large(tmp_path / "model")
    Client(proxy.url, cache_dir=tmp_path / "push").push(tmp_path / "model", "batch/runs@v1")
    proxy.counts.clear()
    pulled = Client(proxy.url, cache_dir=tmp_path / "a").pull("batch/runs@v1", tmp_path / "a-out")
    assert read_tree(tmp_path / "a-out") == files
    alone = large.keys() & set(proxy.gets)
    assert len(alone) <= 1  # every large chunk came in a run (or a run's last, alone)
    assert 1 <= proxy.counts["fetch"] <= 3 + len(large) // 2
    assert pulled.chunks_downloaded >= len(large)
    monkeypatch.setenv("WREG_FETCH_RUN_BYTES", "0")  # e.g. a CDN serves the single GETs
    proxy.gets.clear()
    Client(proxy.url, cache_dir=tmp_path / "b").pull("batch/runs@v1", tmp_path / "b-out")
    assert read_tree(tmp_path / "b-out") == files
    assert large.keys() <= set(proxy.gets)


def test_large_chunks_go_alone_where_batches_are_not_cheap(
    proxy: CountingProxy, tmp_path: Path
) -> None:
    """A registry whose batch answers lack ``x-wreg-large-batches`` (an object store
    behind it: its single GETs redirect there) gets single GETs for the large chunks from
    the first answer that says so on (small ones still go in batches)."""
    files, large = make_large(tmp_path / "model")
    Client(proxy.url, cache_dir=tmp_path / "push").push(tmp_path / "model", "batch/costly@v1")
    proxy.costly_batches = True
    proxy.gets.clear()
    proxy.counts.clear()
    client = Client(proxy.url, cache_dir=tmp_path / "pull", concurrency=1)
    client.pull("batch/costly@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    in_runs = large.keys() - set(proxy.gets)
    # Told by the first batch answer (or by the first run, if no small chunk came first).
    assert sum(large[d] for d in in_runs) <= 16 * MiB
    # After that first answer, batches carry only the small chunks (how many of those
    # random data gives, and so how many batches, varies from run to run).
    from wreg.core.chunking import plan_file

    small = sum(1 for s in plan_file(tmp_path / "model" / "weights.bin") if s.length < MiB)
    assert proxy.counts["fetch"] <= 1 + small


def test_a_flipped_byte_in_a_run_is_an_integrity_error(
    proxy: CountingProxy, tmp_path: Path
) -> None:
    """One tensor of random bytes: three 4 MiB chunks, one run (the header chunk goes
    alone), so the answer the proxy corrupts is the run's."""
    import numpy as np
    from safetensors.numpy import save_file

    model = tmp_path / "model"
    model.mkdir()
    data = np.frombuffer(os.urandom(12 << 20), np.uint8)
    save_file({"w": data}, str(model / "model.safetensors"))
    files = read_tree(model)
    Client(proxy.url, cache_dir=tmp_path / "push").push(model, "batch/runflip@v1")
    proxy.corrupt_fetch = True
    proxy.counts.clear()
    client = Client(proxy.url, cache_dir=tmp_path / "pull", concurrency=1)
    with pytest.raises(IntegrityError, match="does not match"):
        client.pull("batch/runflip@v1", tmp_path / "out")
    assert proxy.counts["fetch"] == 1
    client.pull("batch/runflip@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
