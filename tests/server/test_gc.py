"""Garbage collection (``domain/gc.py``), manifest deletion, and GC racing a push."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.server.server_support import Api, Chunk, assert_error, file_of
from wreg import Client
from wreg._http import Registry
from wreg.core.manifest import Manifest
from wreg_server.db.models import Chunk as ChunkRow
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.db.types import utcnow
from wreg_server.domain.gc import DEFAULT_GRACE, GcResult, collect, parse_duration
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import from_settings
from wreg_server.settings import ServerSettings

ZERO = timedelta(0)


def run_gc(settings: ServerSettings, **kwargs: Any) -> GcResult:
    async def main() -> GcResult:
        return await gc_async(settings, **kwargs)

    return asyncio.run(main())


async def gc_async(settings: ServerSettings, **kwargs: Any) -> GcResult:
    engine = create_engine(settings.database_url)
    store = from_settings(settings)
    try:
        return await collect(create_sessionmaker(engine), store, **kwargs)
    finally:
        await store.close()
        await engine.dispose()


def sql(settings: ServerSettings, statement: Any) -> list[Any]:
    """Run one statement against the index (committed); rows if it returns any."""

    async def main() -> list[Any]:
        engine = create_engine(settings.database_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(statement)
                return list(result) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(main())


def stored_keys(settings: ServerSettings) -> set[str]:
    async def main() -> set[str]:
        store = from_settings(settings)
        try:
            return {k async for k in store.list("chunks/")}
        finally:
            await store.close()

    return asyncio.run(main())


def age(settings: ServerSettings, *chunks: Chunk, by: timedelta) -> None:
    """Pretend these chunks were uploaded and last seen ``by`` ago."""
    then = utcnow() - by
    sql(
        settings,
        update(ChunkRow)
        .where(ChunkRow.digest.in_([c.digest for c in chunks]))
        .values(created_at=then, last_seen_at=then),
    )


@pytest.fixture
def settings(settings: ServerSettings) -> ServerSettings:
    """GC is about storage, whoever may see it: the global namespace keeps these tests
    free of who may read what (``test_tenancy.py``), and its routes are the scoped ones."""
    return settings.model_copy(update={"chunk_namespace": "global"})


def missing(api: Api, *chunks: Chunk) -> list[str]:
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": [c.digest for c in chunks]})
    assert r.status_code == 200, r.text
    result: list[str] = r.json()["missing"]
    return result


def commit(api: Api, name: str, *chunks: Chunk, tag: str | None = "latest") -> Manifest:
    manifest = Manifest.build([file_of(f"f{i}", c) for i, c in enumerate(chunks)])
    r = api.commit(name, manifest, tag)
    assert r.status_code in (200, 201), r.text
    return manifest


@pytest.fixture
def chunks() -> dict[str, Chunk]:
    return {k: Chunk.of(os.urandom(2000 + i * 1000)) for i, k in enumerate("abcde")}


def test_parse_duration() -> None:
    assert parse_duration("0") == ZERO
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "h", "1x", "-1h", "1 h"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_gc_frees_exactly_the_unreferenced(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    a, b, c, d, _ = chunks.values()
    for chunk in (a, b, c, d):
        api.upload(chunk)
    m1 = commit(api, "team/one", a, b)
    commit(api, "team/two", b, c)
    # d was uploaded and never committed; m1 is deleted, so a becomes garbage too.
    r = api.http.delete(f"/v1/repositories/team/one/manifests/{m1.digest}")
    assert r.status_code == 204
    age(settings, a, b, c, d, by=timedelta(days=2))

    result = run_gc(settings)  # default grace
    assert result.chunks_deleted == 2
    assert result.raw_bytes_freed == len(a.raw) + len(d.raw)
    assert result.bytes_freed == len(a.encoded) + len(d.encoded)
    assert result.chunks_in_grace == 0
    assert result.chunks_skipped == 0

    assert stored_keys(settings) == {chunk_key(x.digest) for x in (b, c)}
    assert missing(api, a, b, c, d) == [a.digest, d.digest]
    for x in (b, c):
        assert api.http.get(f"{api.chunks()}/{x.digest}").content == x.encoded
    assert_error(api.http.get(f"{api.chunks()}/{a.digest}"), 404, "CHUNK_UNKNOWN")
    # Idempotent: nothing left to do.
    assert run_gc(settings, grace=ZERO).chunks_deleted == 0


def test_dry_run_changes_nothing(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    a, b, c, _, _ = chunks.values()
    for chunk in (a, b, c):
        api.upload(chunk)
    commit(api, "m", a)
    age(settings, b, by=timedelta(days=2))
    before = (stored_keys(settings), sql(settings, select(ChunkRow)))

    dry = run_gc(settings, dry_run=True)
    assert dry.dry_run
    assert (dry.chunks_deleted, dry.bytes_freed, dry.chunks_in_grace) == (1, len(b.encoded), 1)
    assert (stored_keys(settings), sql(settings, select(ChunkRow))) == before

    real = run_gc(settings)
    assert (real.chunks_deleted, real.bytes_freed, real.raw_bytes_freed) == (
        dry.chunks_deleted,
        dry.bytes_freed,
        dry.raw_bytes_freed,
    )
    assert missing(api, a, b, c) == [b.digest]


def test_grace_protects_fresh_uploads(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    a = chunks["a"]
    api.upload(a)
    result = run_gc(settings)
    assert (result.chunks_deleted, result.chunks_in_grace) == (0, 1)
    # The same chunk, seen from a day later, is garbage.
    result = run_gc(settings, now=utcnow() + DEFAULT_GRACE + timedelta(minutes=1))
    assert result.chunks_deleted == 1
    assert missing(api, a) == [a.digest]


def test_missing_query_and_reupload_refresh_the_grace_clock(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    a, b, c, _, _ = chunks.values()
    for chunk in (a, b, c):
        api.upload(chunk)
    age(settings, a, b, c, by=timedelta(days=2))
    assert missing(api, a) == []  # a push learns a is present: a is protected
    r = api.http.put(f"{api.chunks()}/{b.digest}", content=b.encoded)
    assert r.status_code == 200  # already stored, but its clock restarts
    result = run_gc(settings)
    assert result.chunks_deleted == 1
    assert result.chunks_in_grace == 2
    assert missing(api, a, b, c) == [c.digest]


def test_delete_manifest(api: Api, chunks: dict[str, Chunk]) -> None:
    a, b, _, _, _ = chunks.values()
    api.upload(a)
    api.upload(b)
    m1 = commit(api, "team/model", a, tag="v1")
    m2 = commit(api, "team/model", b, tag="v2")
    for tag in ("latest", "stable"):
        api.http.put(f"/v1/repositories/team/model/tags/{tag}", json={"digest": m1.digest})

    r = api.http.delete(f"/v1/repositories/team/model/manifests/{m1.digest}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(
        api.http.get(f"/v1/repositories/team/model/manifests/{m1.digest}"), 404, "MANIFEST_UNKNOWN"
    )
    tags = api.http.get("/v1/repositories/team/model/tags").json()["tags"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("v2", m2.digest)]

    url = f"/v1/repositories/team/model/manifests/{m1.digest}"
    assert_error(api.http.delete(url), 404, "MANIFEST_UNKNOWN")
    assert_error(api.http.delete("/v1/repositories/team/model/manifests/v2"), 400, "DIGEST_INVALID")
    assert_error(
        api.http.delete(f"/v1/repositories/nobody/manifests/{m2.digest}"), 404, "NAME_UNKNOWN"
    )
    assert_error(
        api.http.delete(f"/v1/repositories/Bad/manifests/{m2.digest}"), 400, "NAME_INVALID"
    )
    # Committing it again brings it back (its chunks are still there until GC).
    commit(api, "team/model", a, tag=None)


def test_condemned_chunk_is_missing_and_an_upload_revives_it(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    """Race 3 of gc.py: a condemned row is not live; uploading it again makes it live."""
    a = chunks["a"]
    api.upload(a)
    sql(settings, update(ChunkRow).values(gc_pending_since=utcnow()))
    assert missing(api, a) == [a.digest]
    r = api.commit("m", Manifest.build([file_of("f", a)]))
    assert_error(r, 400, "MANIFEST_CHUNKS_MISSING")
    r = api.http.put(f"{api.chunks()}/{a.digest}", content=a.encoded)
    assert r.status_code == 201
    assert missing(api, a) == []
    assert run_gc(settings, grace=ZERO).chunks_deleted == 1  # unreferenced: fair game now
    api.upload(a)
    commit(api, "m", a)
    assert run_gc(settings, grace=ZERO).chunks_deleted == 0


def test_crash_mid_sweep_leaves_no_live_row_without_object(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    """A run that died after deleting an object but before committing its row's deletion:
    the row stays condemned (not live) and the next run finishes the job."""
    a, b, _, _, _ = chunks.values()
    api.upload(a)
    api.upload(b)
    sql(
        settings,
        update(ChunkRow).where(ChunkRow.digest == a.digest).values(gc_pending_since=utcnow()),
    )
    key = chunk_key(a.digest)

    async def drop() -> None:
        store = from_settings(settings)
        try:
            await store.delete(key)
        finally:
            await store.close()

    asyncio.run(drop())
    assert missing(api, a, b) == [a.digest]  # never reported present without its object
    result = run_gc(settings)  # default grace: b is young, a was already condemned
    assert (result.chunks_deleted, result.chunks_in_grace) == (1, 1)
    assert stored_keys(settings) == {chunk_key(b.digest)}


def test_referenced_condemned_chunk_is_repaired_not_deleted(
    api: Api, settings: ServerSettings, chunks: dict[str, Chunk]
) -> None:
    """Race 4 of gc.py: a manifest committed over a chunk just as it was condemned."""
    a = chunks["a"]
    api.upload(a)
    commit(api, "m", a)
    sql(settings, update(ChunkRow).values(gc_pending_since=utcnow()))
    result = run_gc(settings, grace=ZERO)
    assert result.chunks_deleted == 0
    assert api.http.get(f"{api.chunks()}/{a.digest}").content == a.encoded
    rows = sql(settings, select(ChunkRow.gc_pending_since))
    assert rows == [(None,)]
    assert missing(api, a) == []


# -- GC during a real push (the client's re-upload path) -----------------------------------


def model_dir(root: Path) -> Path:
    model = root / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(os.urandom(200_000))
    (model / "b.bin").write_bytes(os.urandom(50_000))
    return model


def push_with_gc_before_commit(
    base_url: str,
    settings: ServerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    grace: timedelta,
) -> tuple[Any, list[GcResult], list[str]]:
    """Push a model, running GC after its chunks are uploaded and before its commit."""
    original = Registry.put_manifest
    ran: list[GcResult] = []
    commits: list[str] = []

    async def put_manifest(self: Registry, name: str, digest: str, body: bytes, tag: Any) -> Any:
        if not ran:
            ran.append(await gc_async(settings, grace=grace))
        commits.append(digest)
        return await original(self, name, digest, body, tag)

    monkeypatch.setattr(Registry, "put_manifest", put_manifest)
    client = Client(base_url, cache_dir=tmp_path / "cache")
    pushed = client.push(model_dir(tmp_path), "team/model@v1")
    return pushed, ran, commits


def test_gc_during_push_with_zero_grace_push_still_commits(
    base_url: str, settings: ServerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed, ran, commits = push_with_gc_before_commit(
        base_url, settings, tmp_path, monkeypatch, ZERO
    )
    assert ran[0].chunks_deleted == pushed.chunks_new > 0  # GC took every chunk of the push
    assert len(commits) == 2  # refused with MANIFEST_CHUNKS_MISSING, re-uploaded, committed
    monkeypatch.undo()
    out = tmp_path / "out"
    Client(base_url, cache_dir=tmp_path / "cache2").pull("team/model@v1", out)
    assert (out / "a.bin").read_bytes() == (tmp_path / "model" / "a.bin").read_bytes()
    assert run_gc(settings, grace=ZERO).chunks_deleted == 0


def test_gc_during_push_with_default_grace_keeps_the_chunks(
    base_url: str, settings: ServerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed, ran, commits = push_with_gc_before_commit(
        base_url, settings, tmp_path, monkeypatch, DEFAULT_GRACE
    )
    assert ran[0].chunks_deleted == 0
    assert ran[0].chunks_in_grace == pushed.chunks_new
    assert len(commits) == 1
