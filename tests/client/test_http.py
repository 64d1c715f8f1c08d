"""Error mapping and retries against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from wreg._http import Registry
from wreg.core.errors import (
    ErrorCode,
    IntegrityError,
    NotFound,
    RegistryError,
    TransportError,
    WregError,
)
from wreg.core.reference import Reference
from wreg.core.sizes import MAX_MANIFEST_BYTES
from wreg.testing.webapps import start_app

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    return web.Response(
        status=status, text=body, content_type="application/json", headers={"X-Request-Id": "r1"}
    )


async def _with_server(
    routes: list[web.RouteDef], body: Callable[[Registry], Awaitable[None]]
) -> None:
    app = web.Application()
    app.add_routes(routes)
    runner, port = await start_app(app)
    try:
        async with Registry(f"http://127.0.0.1:{port}", None, 4, 10) as registry:
            await body(registry)
    finally:
        await runner.cleanup()


def test_transient_errors_are_retried_then_succeed() -> None:
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return _error(503, "UNAVAILABLE", "busy")
        return web.Response(body=b"chunk-bytes")

    async def body(r: Registry) -> None:
        assert await r.get_chunk("t/m", "blake3:" + "0" * 64) == b"chunk-bytes"

    asyncio.run(_with_server([web.get("/v1/repositories/t/m/chunks/{d}", flaky)], body))
    assert calls["n"] == 3


def test_permanent_errors_are_not_retried_and_keep_code_and_request_id() -> None:
    calls = {"n": 0}

    async def reject(request: web.Request) -> web.Response:
        calls["n"] += 1
        return _error(400, "DIGEST_MISMATCH", "content does not match")

    async def body(r: Registry) -> None:
        with pytest.raises(IntegrityError) as info:
            await r.put_chunk("t/m", "blake3:" + "0" * 64, b"x")
        assert info.value.code is ErrorCode.DIGEST_MISMATCH
        assert info.value.request_id == "r1"
        assert "request r1" in str(info.value)

    asyncio.run(_with_server([web.put("/v1/repositories/t/m/chunks/{d}", reject)], body))
    assert calls["n"] == 1


def test_not_found_names_the_reference() -> None:
    async def missing(request: web.Request) -> web.Response:
        return _error(404, "TAG_UNKNOWN", "tag 'v9' is unknown")

    async def body(r: Registry) -> None:
        with pytest.raises(NotFound) as info:
            await r.get_manifest(Reference.parse("team/m@v9"))
        assert str(info.value).startswith("team/m@v9 not found")

    asyncio.run(_with_server([web.get("/v1/repositories/{n:.*}/manifests/{r}", missing)], body))


def test_non_json_errors_still_map() -> None:
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=400, text="<html>nope</html>")

    async def body(r: Registry) -> None:
        with pytest.raises(RegistryError, match="missing-chunks query: HTTP 400"):
            await r.missing_chunks("t/m", ["blake3:" + "0" * 64])

    asyncio.run(_with_server([web.post("/v1/repositories/t/m/chunks/missing", teapot)], body))


def test_connection_refused_is_a_transport_error() -> None:
    async def body() -> None:
        async with Registry("http://127.0.0.1:9", None, 2, 2) as r:
            with pytest.raises(TransportError) as info:
                await r.missing_chunks("t/m", ["blake3:" + "0" * 64])
            assert "cannot reach the registry at http://127.0.0.1:9" in str(info.value)

    asyncio.run(body())


@pytest.mark.parametrize(("status", "declared"), [(200, None), (200, 1 << 40), (404, None)])
def test_endless_control_answer_is_cut_off_while_streaming(
    status: int, declared: int | None
) -> None:
    """A hostile registry streams an endless manifest (or error) body: the client stops
    reading just past the cap, failing fast, with memory bounded by the cap."""
    sent = {"bytes": 0}
    piece = b"{" * (1 << 20)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        if declared is not None:
            response.content_length = declared
        await response.prepare(request)
        try:
            while sent["bytes"] < 64 * MAX_MANIFEST_BYTES:
                await response.write(piece)
                sent["bytes"] += len(piece)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def body(r: Registry) -> None:
        with pytest.raises(WregError) as info:
            await r.get_manifest(Reference.parse("team/m@v1"))
        expected = ErrorCode.MANIFEST_TOO_LARGE if status == 200 else ErrorCode.NOT_FOUND
        assert info.value.code in {expected, ErrorCode.TAG_UNKNOWN}

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    asyncio.run(_with_server([web.get("/v1/repositories/{n:.*}/manifests/{r}", endless)], body))
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert sent["bytes"] < 4 * MAX_MANIFEST_BYTES
    assert growth < 4 * MAX_MANIFEST_BYTES, f"peak RSS grew by {growth >> 20} MiB"
