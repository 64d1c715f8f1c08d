"""One suite every object store backend must pass: memory, filesystem and S3 (on moto)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.moto import MotoS3
from wreg.core.digest import digest_bytes
from wreg.core.errors import InvalidInput
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import (
    FilesystemStore,
    InvalidKey,
    MemoryStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    backends,
    from_settings,
)
from wreg_server.settings import ServerSettings

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "file", "s3"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    options: dict[str, Any] = {"store": request.param}
    if request.param == "s3":  # moto starts only when an S3 case runs
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        options = moto.settings(moto.create_bucket(), s3_redirect=True, s3_prefix="registry-1")
    s = from_settings(ServerSettings(data=tmp_path, store_fsync=False, **options))
    try:
        yield s
    finally:
        await s.close()


async def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [k async for k in store.list(prefix)]


async def test_put_get_roundtrip(store: ObjectStore) -> None:
    await store.put("a/b/c", b"hello")
    assert await store.get("a/b/c") == b"hello"
    assert await store.exists("a/b/c")
    assert await store.size("a/b/c") == 5


async def test_put_replaces(store: ObjectStore) -> None:
    await store.put("k", b"one")
    await store.put("k", b"two!")
    assert await store.get("k") == b"two!"
    assert await store.size("k") == 4


async def test_put_many_and_exists_many(store: ObjectStore) -> None:
    """The batch forms (issue 11) behave as the single calls, in order, under new and
    existing prefixes, replacing what was there."""
    await store.put("p/q/old", b"before")
    items = [(f"p/{i % 3}/k{i}", bytes([i]) * i) for i in range(20)] + [("p/q/old", b"after")]
    await store.put_many(items)
    for key, data in items:
        assert await store.get(key) == data
    assert await store.exists_many(["p/1/k1", "p/none", "p/q/old"]) == [True, False, True]
    assert await store.exists_many([]) == []
    await store.put_many([])
    with pytest.raises(InvalidKey):
        await store.put_many([("ok", b""), ("../bad", b"")])


async def test_empty_object(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert await store.size("empty") == 0


async def test_missing_key(store: ObjectStore) -> None:
    assert not await store.exists("nope")
    with pytest.raises(ObjectNotFound):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        await store.size("nope")


async def test_directory_is_not_an_object(store: ObjectStore) -> None:
    await store.put("dir/leaf", b"x")
    assert not await store.exists("dir")
    with pytest.raises(ObjectNotFound):
        await store.get("dir")
    with pytest.raises(ObjectNotFound):
        await store.size("dir")


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put("k", b"v")
    await store.delete("k")
    assert not await store.exists("k")
    await store.delete("k")
    await store.delete("never/existed")


async def test_list_by_prefix_sorted(store: ObjectStore) -> None:
    for key in ["chunks/bb/2", "chunks/aa/1", "chunks/aa/0", "other/x", "chunksy"]:
        await store.put(key, b"v")
    assert await keys(store, "chunks/") == ["chunks/aa/0", "chunks/aa/1", "chunks/bb/2"]
    assert await keys(store, "chunks/aa/") == ["chunks/aa/0", "chunks/aa/1"]
    assert await keys(store, "chunks") == ["chunks/aa/0", "chunks/aa/1", "chunks/bb/2", "chunksy"]
    assert await keys(store, "chunks/a") == ["chunks/aa/0", "chunks/aa/1"]
    assert len(await keys(store)) == 5
    assert await keys(store, "missing/") == []


async def test_list_paginates(store: ObjectStore) -> None:
    """More keys than one S3 ListObjectsV2 page (1000) come back, all of them, in order."""
    expected = sorted(f"many/{i:02x}/{i:05d}" for i in range(1234))
    gate = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with gate:
            await store.put(key, b"")

    await asyncio.gather(*(put(k) for k in expected))
    await store.put("other", b"")
    assert await keys(store, "many/") == expected
    assert await keys(store, "many/0") == [k for k in expected if k.startswith("many/0")]
    assert len(await keys(store)) == len(expected) + 1


async def test_put_is_atomic_for_readers(store: ObjectStore) -> None:
    """A reader racing a put sees no object, the old one or the new one — never a part."""
    if store.name == "s3":
        # S3 itself replaces objects atomically, but moto's server under load was seen to
        # serve an empty object mid-replace; wreg never replaces a chunk with other bytes
        # (keys are digests), so this guarantee matters for the local backends only.
        pytest.skip("moto's standalone server does not replace objects atomically")
    old, new = b"o" * (3 << 20), os.urandom(5 << 20)
    await store.put("big", old)
    seen: set[int] = set()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            data = await store.get("big")
            assert data in (old, new)
            seen.add(len(data))
            await asyncio.sleep(0)

    async def write() -> None:
        try:
            await store.put("big", new)
        finally:
            done.set()

    await asyncio.gather(read(), write())
    assert await store.get("big") == new

    await store.put("racing/first", b"")  # a brand-new key: absent, then whole
    fresh = os.urandom(4 << 20)

    async def read_new() -> bytes:
        while True:
            try:
                return await store.get("racing/new")
            except ObjectNotFound:
                await asyncio.sleep(0)

    reader = asyncio.create_task(read_new())
    await store.put("racing/new", fresh)
    assert await asyncio.wait_for(reader, 30) == fresh


async def test_presigned_url(store: ObjectStore) -> None:
    """Backends that hand out direct URLs give ones a plain HTTP GET can use; others None."""
    data = os.urandom(1 << 20)
    await store.put("chunks/ab/signed", data)
    url = await store.presigned_url("chunks/ab/signed")
    if not isinstance(store, S3Store):
        assert url is None
        return
    assert url is not None
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=900" in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == data
        missing = await store.presigned_url("chunks/ab/missing")
        assert missing is not None
        assert (await http.get(missing)).status_code == 404
    with pytest.raises(InvalidKey):
        await store.presigned_url("../x")


@pytest.mark.parametrize(
    "key", ["", "/abs", "../x", "a/../b", "a//b", "a/./b", ".tmp/x", "a/", "a\\b", "a b", "é"]
)
async def test_invalid_keys(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"v")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.exists(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)


async def test_invalid_list_prefix(store: ObjectStore) -> None:
    with pytest.raises(InvalidKey):
        await keys(store, "../")


async def test_filesystem_leaves_no_staging_files(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=True)
    await store.put("chunks/ab/abc", b"data")
    assert (tmp_path / "chunks" / "ab" / "abc").read_bytes() == b"data"
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert await keys(store) == ["chunks/ab/abc"]


async def test_filesystem_failed_put_is_invisible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path, fsync=False)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        await store.put("k", b"data")
    assert not await store.exists("k")
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_memory_store_copies_input() -> None:
    store = MemoryStore()
    data = bytearray(b"abc")
    await store.put("k", bytes(data))
    data[0] = 0
    assert await store.get("k") == b"abc"


def test_chunk_key_layout() -> None:
    digest = digest_bytes(b"x")
    hex_digest = digest.split(":")[1]
    assert chunk_key(digest) == f"chunks/{hex_digest[:2]}/{hex_digest}"
    with pytest.raises(InvalidInput):
        chunk_key("blake3:XYZ")


def test_factory(tmp_path: Path) -> None:
    assert {"file", "memory", "s3"} <= set(backends())
    store = from_settings(ServerSettings(data=tmp_path, store="file"))
    assert isinstance(store, FilesystemStore)
    assert store.root == tmp_path / "objects"
    with pytest.raises(ValueError, match="unknown object store 's4'"):
        from_settings(ServerSettings(data=tmp_path, store="s4"))


def test_s3_settings_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 store reads WREG_S3_* and the standard AWS_* credential variables."""
    env = {
        "WREG_STORE": "s3",
        "WREG_S3_ENDPOINT": "http://127.0.0.1:9",
        "WREG_S3_BUCKET": "models",
        "WREG_S3_REGION": "eu-west-3",
        "WREG_S3_PREFIX": "/wreg/",
        "WREG_S3_REDIRECT": "true",
        "WREG_S3_REDIRECT_EXPIRES": "120",
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "sekrit",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ServerSettings(data=tmp_path)
    assert settings.s3_access_key_id == "AKID"
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "sekrit"
    assert "sekrit" not in repr(settings)
    store = from_settings(settings)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.redirect) == ("models", "wreg", True)
    assert store.redirect_expires.total_seconds() == 120


async def test_s3_presigns_for_the_public_endpoint(tmp_path: Path) -> None:
    """Presigned URLs name the endpoint clients use, which may differ from the server's."""
    store = S3Store(
        "models",
        endpoint="http://minio:9000",
        public_endpoint="https://s3.example.com",
        region="us-east-1",
        access_key_id="AKID",
        secret_access_key="sekrit",  # noqa: S106 - a made-up key; nothing is sent
        redirect=True,
    )
    url = await store.presigned_url("chunks/ab/abc")
    assert url is not None
    assert url.startswith("https://s3.example.com/models/chunks/ab/abc?")
    assert await S3Store("models", region="us-east-1").presigned_url("k") is None  # redirect off


def test_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WREG_S3_BUCKET"):
        from_settings(ServerSettings(data=tmp_path, store="s3"))
