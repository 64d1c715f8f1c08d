"""One suite every object store backend must pass (add S3 to ``BACKENDS`` later)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wreg.core.digest import digest_bytes
from wreg.core.errors import InvalidInput
from wreg_server.objectstore import (
    FilesystemStore,
    InvalidKey,
    MemoryStore,
    ObjectNotFound,
    ObjectStore,
    backends,
    chunk_key,
    from_settings,
)
from wreg_server.settings import ServerSettings

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "file"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    s = from_settings(ServerSettings(data=tmp_path, store=request.param, store_fsync=False))
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
    assert {"file", "memory"} <= set(backends())
    store = from_settings(ServerSettings(data=tmp_path, store="file"))
    assert isinstance(store, FilesystemStore)
    assert store.root == tmp_path / "objects"
    with pytest.raises(ValueError, match="unknown object store 's4'"):
        from_settings(ServerSettings(data=tmp_path, store="s4"))
