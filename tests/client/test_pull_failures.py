"""A pull that fails permanently leaves no partial files; one bounded by ``max_total``
never starts writing. Against a hostile aiohttp registry on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp import web

from wreg import Client
from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.errors import IntegrityError, NotFound, WregError
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.testing.webapps import CHUNK_ROUTE, start_app

CHUNK = 256 * 1024


def _manifest(good: bytes, bad: bytes) -> Manifest:
    """a.bin: the good chunk; b.bin: the good chunk then the bad one, 64 times over."""
    refs_a = (ChunkRef(digest_bytes(good), len(good)),)
    refs_b = (*refs_a, *[ChunkRef(digest_bytes(bad), len(bad))] * 64)
    return Manifest.build(
        [
            FileEntry.of("a.bin", refs_a),
            FileEntry.of("b.bin", refs_b),
        ]
    )


def _pull_from(bad_chunk: web.Response, cache: Path, out: Path) -> WregError:
    good, bad = os.urandom(CHUNK), os.urandom(CHUNK)
    body = _manifest(good, bad).to_json_bytes()
    chunks = {digest_bytes(good): encode_chunk(good)}

    async def manifest(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Wreg-Manifest-Digest": digest_bytes(body)})

    async def chunk(request: web.Request) -> web.Response:
        encoded = chunks.get(request.match_info["digest"])
        return web.Response(body=encoded) if encoded is not None else bad_chunk

    async def main() -> WregError:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/repositories/{n:.*}/manifests/{r}", manifest),
                web.get(CHUNK_ROUTE, chunk),
            ]
        )
        runner, port = await start_app(app)
        try:
            client = Client(f"http://127.0.0.1:{port}", cache_dir=cache)
            with pytest.raises(WregError) as info:
                await client.apull("evil/m@v1", out)
            return info.value
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def _partial_files(cache: Path) -> list[str]:
    tmp = cache / "tmp"
    return sorted(p.name for p in tmp.iterdir() if p.is_file()) if tmp.exists() else []


@pytest.mark.parametrize(
    ("bad_chunk", "kind"),
    [
        pytest.param(
            lambda: web.Response(body=encode_chunk(os.urandom(CHUNK))), IntegrityError, id="wrong"
        ),
        pytest.param(
            lambda: web.Response(
                status=404,
                content_type="application/json",
                text='{"errors": [{"code": "CHUNK_UNKNOWN", "message": "gone", "detail": null}]}',
            ),
            NotFound,
            id="missing",
        ),
    ],
)
def test_permanent_failure_leaves_no_partial_files(
    tmp_path: Path, bad_chunk: object, kind: type[WregError]
) -> None:
    assert callable(bad_chunk)
    cache, out = tmp_path / "cache", tmp_path / "out"
    error = _pull_from(bad_chunk(), cache, out)
    assert isinstance(error, kind), error
    assert _partial_files(cache) == []
    assert not (out / "b.bin").exists()
