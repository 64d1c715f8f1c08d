"""The registry on an S3 object store (moto on 127.0.0.1), end to end.

The whole server suite already runs on PostgreSQL + S3 (the ``settings`` fixture's
``postgres-s3`` variant, streaming through the server, no key prefix); this adds what it
does not cover: chunks under a key prefix, chunks answered with a 307 to a presigned
URL, and a real ``wreg-server serve`` process on S3 with redirects on, pushed to and
pulled from with ``wreg.Client``. Each moves the store of whatever ``settings`` gives
onto a bucket of its own, so each runs on both indexes (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import wreg
from tests.server.server_support import Api, Chunk, running
from tests.services.moto import MotoS3
from wreg._http import Registry
from wreg.testing.servers import start_server
from wreg_server.app import create_app
from wreg_server.domain.layout import chunk_key
from wreg_server.settings import ServerSettings

IMMUTABLE = "public, max-age=31536000, immutable"


def _on_s3(settings: ServerSettings, moto: MotoS3, bucket: str, **extra: Any) -> ServerSettings:
    """``settings`` (whatever index it names) with the object store moved to S3."""
    update = moto.settings(bucket, **extra)
    update["s3_secret_access_key"] = SecretStr(update["s3_secret_access_key"])
    return settings.model_copy(update=update)


def _bucket_keys(moto: MotoS3, bucket: str) -> str:
    return httpx.get(f"{moto.endpoint}/{bucket}?list-type=2", timeout=30).text


@pytest.fixture
def streaming(
    settings: ServerSettings, moto_s3: MotoS3, s3_bucket: str
) -> Iterator[tuple[Api, ServerSettings]]:
    s3 = _on_s3(settings, moto_s3, s3_bucket, s3_prefix="wreg")
    with running(create_app(s3)) as url, Api(url) as api:
        yield api, s3


@pytest.fixture
def redirecting(
    settings: ServerSettings, moto_s3: MotoS3, s3_bucket: str
) -> Iterator[tuple[Api, ServerSettings]]:
    s3 = _on_s3(settings, moto_s3, s3_bucket, s3_redirect=True, s3_redirect_expires=600)
    with running(create_app(s3)) as url, Api(url) as api:
        yield api, s3


def test_chunk_streams_through_the_server(
    streaming: tuple[Api, ServerSettings], moto_s3: MotoS3, s3_bucket: str
) -> None:
    api, _ = streaming
    chunk = Chunk.of(os.urandom(200_000))
    assert api.upload(chunk).status_code == 201
    assert api.upload(chunk).status_code == 201  # through a repository: like a first upload
    api.reference(chunk)
    assert f"<Key>wreg/{chunk_key(chunk.digest)}</Key>" in _bucket_keys(moto_s3, s3_bucket)

    response = api.http.get(f"{api.chunks()}/{chunk.digest}")
    assert response.status_code == 200
    assert response.content == chunk.encoded
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["etag"] == f'"{chunk.digest}"'
    missing = api.http.get(f"{api.chunks()}/{Chunk.of(b'never pushed').digest}")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "CHUNK_UNKNOWN"


def test_redirect_mode_answers_307_to_a_presigned_url(
    redirecting: tuple[Api, ServerSettings], moto_s3: MotoS3
) -> None:
    api, _ = redirecting
    chunk = Chunk.of(os.urandom(150_000))
    api.upload(chunk)
    api.reference(chunk)

    response = api.http.get(f"{api.chunks()}/{chunk.digest}")  # httpx: redirects not followed
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(moto_s3.endpoint + "/")
    assert chunk_key(chunk.digest) in location
    assert "X-Amz-Signature=" in location
    assert "X-Amz-Expires=600" in location
    assert response.headers["cache-control"] == "no-store"  # never cache a link that expires
    assert response.headers.get("x-request-id")

    assert httpx.get(location, timeout=30).content == chunk.encoded  # plain GET, no auth
    followed = api.http.get(f"{api.chunks()}/{chunk.digest}", follow_redirects=True)
    assert followed.status_code == 200
    assert followed.content == chunk.encoded

    # Unknown chunks are still refused by the registry itself, not redirected.
    unknown = api.http.get(f"{api.chunks()}/{Chunk.of(b'nope').digest}")
    assert unknown.status_code == 404
    # HEAD and conditional GETs stay with the registry.
    assert api.http.head(f"{api.chunks()}/{chunk.digest}").status_code == 200
    conditional = api.http.get(
        f"{api.chunks()}/{chunk.digest}", headers={"If-None-Match": f'"{chunk.digest}"'}
    )
    assert conditional.status_code == 304

    async def through_client() -> bytes:
        async with Registry(str(api.http.base_url), "a-token", 4, 30) as registry:
            return await registry.get_chunk(api.repository, chunk.digest)

    assert asyncio.run(through_client()) == chunk.encoded


def test_push_and_pull_through_a_server_process_on_s3_with_redirects(
    settings: ServerSettings, moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    weights = os.urandom(3 << 20) + bytes(2 << 20)  # several chunks, some compressible
    (model / "weights.bin").write_bytes(weights)
    (model / "config.json").write_text('{"layers": 2}')

    env = moto_s3.env(s3_bucket, redirect=True) | {"WREG_DATABASE_URL": settings.database_url}
    server = start_server(tmp_path / "data", env, log=tmp_path / "server.log")
    url = server.url
    try:
        client = wreg.Client(url, token="t0ken", cache_dir=tmp_path / "cache")  # noqa: S106 - a made-up token; auth is off
        pushed = client.push(model, "team/model@v1")
        assert pushed.chunks_new >= 2
        assert "<Key>chunks/" in _bucket_keys(moto_s3, s3_bucket)

        digest = pushed.manifest
        manifest = httpx.get(f"{url}/v1/repositories/team/model/manifests/{digest}").json()
        first_chunk = manifest["files"][0]["chunks"][0]["digest"]
        chunk_url = f"{url}/v1/repositories/team/model/chunks/{first_chunk}"
        assert httpx.get(chunk_url).status_code == 307

        fresh = wreg.Client(url, token="t0ken", cache_dir=tmp_path / "cache2")  # noqa: S106 - a made-up token; auth is off
        pulled = fresh.pull("team/model@v1", dest=tmp_path / "out")
        assert pulled.bytes_downloaded > 0
        assert (tmp_path / "out" / "weights.bin").read_bytes() == weights
        assert (tmp_path / "out" / "config.json").read_text() == '{"layers": 2}'
        assert fresh.push(model, "team/model@v2").chunks_new == 0
    finally:
        server.stop()
