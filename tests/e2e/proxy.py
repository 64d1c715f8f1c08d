"""A counting, throttling HTTP proxy in front of a real wreg-server (runs in a thread).

It forwards every request and counts chunk GETs per digest, so a test can tell exactly
which bytes crossed the wire. ``delay`` slows each chunk GET; after ``serve_limit`` chunk
GETs further ones hang (the client sees a stalled server) until ``unblock()``. It counts
single-chunk GETs, so unless ``batches`` is set it answers the batched chunk routes 405,
as a registry without them does, and the client fetches every chunk alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import aiohttp
from aiohttp import web

from wreg.testing.webapps import chunk_digest, start_app

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class Forwarded(NamedTuple):
    """What the upstream answered a forwarded request, and the body that was sent."""

    status: int
    body: bytes
    headers: dict[str, str]
    sent: bytes


async def forward(session: aiohttp.ClientSession, upstream: str, request: web.Request) -> Forwarded:
    """Send ``request`` on to ``upstream`` as it came (no redirects followed), and read
    the whole answer; hop-by-hop headers are left for the proxy's own response. The
    one forwarding step of every test proxy (this module, ``faults.py``, the batching
    tests)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    sent = await request.read()
    async with session.request(
        request.method,
        upstream + request.path_qs,
        headers=headers,
        data=sent or None,
        allow_redirects=False,
    ) as r:
        payload = await r.read()
        keep = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_HEADERS}
        return Forwarded(r.status, payload, keep, sent)


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.gets: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.delay = 0.0
        self.serve_limit: int | None = None
        self.batches = False  # forward POST .../chunks/fetch|upload (else: 405)
        self._generation = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def served(self) -> int:
        return sum(self.gets.values())

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)

        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests.append((request.method, request.path))
            batched = request.path.endswith(("/chunks/fetch", "/chunks/upload"))
            if request.method == "POST" and batched and not self.batches:
                error = {"code": "METHOD_NOT_ALLOWED", "message": "no", "detail": None}
                return web.json_response({"errors": [error]}, status=405)
            chunk = request.method == "GET" and chunk_digest(request.path) is not None
            if chunk:
                if self.serve_limit is not None and self.served >= self.serve_limit:
                    generation = self._generation
                    # polls attributes the test thread sets: no event loop there to signal
                    while self.serve_limit is not None and self.served >= self.serve_limit:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    if generation != self._generation:  # its client is gone (see unblock)
                        raise web.HTTPServiceUnavailable()
                self.gets[request.path.rsplit("/", 1)[1]] += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
            answer = await forward(session, self.upstream, request)
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner, port = await start_app(app)
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        await self._stop.wait()
        await session.close()
        await runner.cleanup()

    def unblock(self) -> None:
        """Lift ``serve_limit``; requests stalled until now fail (their client was killed)."""
        self._generation += 1
        self.serve_limit = None

    def start(self) -> Proxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def proxy(upstream: str) -> Iterator[Proxy]:
    p = Proxy(upstream).start()
    try:
        yield p
    finally:
        p.close()
