"""Chunk downloads redirected to an object store (S3 presigned URLs), against real servers.

Two aiohttp servers on 127.0.0.1: a "registry" that answers chunk GETs with a 307 to a
"store" on another port (so another origin), and the store, which records what it was
sent and answers like S3 does, XML errors included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from wreg._http import ATTEMPTS, Registry
from wreg.core.errors import ErrorCode, NotFound, RegistryError, TransportError
from wreg.testing.procs import free_port
from wreg.testing.webapps import start_app

DIGEST = "blake3:" + "ab" * 32
TOKEN = "sekrit-token"  # noqa: S105 - a made-up token for a fake registry
BODY = b"encoded-chunk-bytes"


def _s3_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>S3REQ</RequestId></Error>"
    )
    return web.Response(
        status=status,
        text=xml,
        content_type="application/xml",
        headers={"x-amz-request-id": "S3REQ"},
    )


@dataclass
class Seen:
    registry_auth: list[str | None] = field(default_factory=list)
    store_auth: list[str | None] = field(default_factory=list)
    store_queries: list[str] = field(default_factory=list)


def _run(
    store: Callable[[web.Request], Awaitable[web.StreamResponse]] | None,
    body: Callable[[Registry, Seen], Awaitable[None]],
    store_port: int | None = None,
) -> Seen:
    seen = Seen()

    async def main() -> None:
        runners = []
        if store is not None:

            async def store_handler(request: web.Request) -> web.StreamResponse:
                seen.store_auth.append(request.headers.get("Authorization"))
                seen.store_queries.append(request.query_string)
                return await store(request)

            store_app = web.Application()
            store_app.add_routes([web.get("/bucket/{key:.*}", store_handler)])
            runner, port = await start_app(store_app)
            runners.append(runner)
        else:
            assert store_port is not None
            port = store_port

        async def registry_handler(request: web.Request) -> web.StreamResponse:
            seen.registry_auth.append(request.headers.get("Authorization"))
            location = f"http://127.0.0.1:{port}/bucket/chunks/ab/x?X-Amz-Signature=abc"
            return web.Response(
                status=307,
                headers={
                    "Location": location,
                    "Cache-Control": "no-store",
                    "X-Request-Id": "wreg-req-1",
                },
            )

        registry_app = web.Application()
        registry_app.add_routes([web.get("/v1/repositories/t/m/chunks/{d}", registry_handler)])
        runner, registry_port = await start_app(registry_app)
        runners.append(runner)
        try:
            async with Registry(f"http://127.0.0.1:{registry_port}", TOKEN, 4, 10) as registry:
                await body(registry, seen)
        finally:
            for r in runners:
                await r.cleanup()

    asyncio.run(main())
    return seen


async def _ok(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/octet-stream")


def test_redirect_is_followed_without_the_token() -> None:
    """aiohttp follows the 307 and drops Authorization for the store's other origin."""

    async def body(r: Registry, seen: Seen) -> None:
        assert await r.get_chunk("t/m", DIGEST) == BODY
        buf = bytearray(64)
        assert await r.get_chunk_into("t/m", DIGEST, buf) == len(BODY)
        assert bytes(buf[: len(BODY)]) == BODY

    seen = _run(_ok, body)
    assert seen.registry_auth == [f"Bearer {TOKEN}"] * 2
    assert seen.store_auth == [None, None]
    assert seen.store_queries == ["X-Amz-Signature=abc"] * 2


def test_store_404_is_a_clear_not_found_and_not_retried() -> None:
    async def missing(request: web.Request) -> web.Response:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")

    async def body(r: Registry, seen: Seen) -> None:
        for download in (
            r.get_chunk("t/m", DIGEST),
            r.get_chunk_into("t/m", DIGEST, bytearray(64)),
        ):
            with pytest.raises(NotFound) as info:
                await download
            error = info.value
            assert error.code is ErrorCode.CHUNK_UNKNOWN
            assert "missing from the object store" in error.message
            assert "NoSuchKey" in error.message
            assert DIGEST in error.message
            assert error.request_id == "wreg-req-1"
            assert error.detail["store_request_id"] == "S3REQ"

    seen = _run(missing, body)
    assert len(seen.store_auth) == 2  # one attempt each


def test_store_403_expired_is_retried_then_explained() -> None:
    async def expired(request: web.Request) -> web.Response:
        return _s3_error(403, "AccessDenied", "Request has expired")

    async def body(r: Registry, seen: Seen) -> None:
        with pytest.raises(TransportError) as info:
            await r.get_chunk("t/m", DIGEST)
        message = info.value.message
        assert "403 AccessDenied: Request has expired" in message
        assert "presigned URL expired" in message
        assert info.value.request_id == "wreg-req-1"

    seen = _run(expired, body)
    # Each attempt goes back to the registry for a fresh signature.
    assert len(seen.registry_auth) == ATTEMPTS == len(seen.store_auth)


def test_store_403_then_success_recovers() -> None:
    calls = {"n": 0}

    async def once_expired(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return await _ok(request)

    async def body(r: Registry, seen: Seen) -> None:
        assert await r.get_chunk("t/m", DIGEST) == BODY

    _run(once_expired, body)
    assert calls["n"] == 2


def test_store_400_is_permanent() -> None:
    async def bad(request: web.Request) -> web.Response:
        return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")

    async def body(r: Registry, seen: Seen) -> None:
        with pytest.raises(RegistryError, match="Only one auth mechanism allowed"):
            await r.get_chunk("t/m", DIGEST)

    seen = _run(bad, body)
    assert len(seen.store_auth) == 1


def test_unreachable_store_names_the_store() -> None:
    dead_port = free_port()  # a port nobody listens on

    async def body(r: Registry, seen: Seen) -> None:
        with pytest.raises(TransportError, match=f"object store at 127.0.0.1:{dead_port}"):
            await r.get_chunk("t/m", DIGEST)

    _run(None, body, store_port=dead_port)
