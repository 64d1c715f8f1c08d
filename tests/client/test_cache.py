from __future__ import annotations

import os
from pathlib import Path

from wreg._cache import NodeCache
from wreg._cache_ops import materialize
from wreg.core.digest import digest_bytes
from wreg.core.manifest import ChunkRef, FileEntry, Manifest


def _entry(path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    half = len(data) // 2
    chunks = (
        ChunkRef(digest_bytes(data[:half]), half),
        ChunkRef(digest_bytes(data[half:]), len(data) - half),
    )
    return FileEntry.of(path, chunks, mode)


def _commit(cache: NodeCache, entry: FileEntry, data: bytes) -> Path:
    temp = cache.temp_path(entry.digest)
    temp.write_bytes(data)
    return cache.commit_blob(temp, entry)


def test_blobs_are_read_only_and_their_chunks_indexed(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    data = os.urandom(1000)
    entry = _entry("w.bin", data)
    blob = _commit(cache, entry, data)
    assert blob.read_bytes() == data
    # The mode bits, not os.access: as root (CI) W_OK is granted whatever the mode says.
    assert blob.stat().st_mode & 0o777 == 0o444
    assert cache.has_blob(entry)
    where = cache.locate_chunks([c.digest for c in entry.chunks] + ["blake3:" + "1" * 64])
    assert where == {
        entry.chunks[0].digest: (blob, 0, 500, True),
        entry.chunks[1].digest: (blob, 500, 500, True),
    }
    assert list((tmp_path / "tmp").iterdir()) == []
    cache.close()


def test_snapshot_links_to_blobs_and_materialize_hardlinks(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    a, b = os.urandom(100), b"#!/bin/sh\n"
    manifest = Manifest.build([_entry("dir/a.bin", a), _entry("run.sh", b, 0o755)])
    for f, data in zip(manifest.files, (a, b), strict=True):
        _commit(cache, f, data)
    snap = cache.build_snapshot("team/m", manifest)
    assert (snap / "dir" / "a.bin").is_symlink()
    assert not os.path.isabs(os.readlink(snap / "dir" / "a.bin"))
    assert (snap / "dir" / "a.bin").read_bytes() == a
    assert cache.build_snapshot("team/m", manifest) == snap  # idempotent

    out = tmp_path / "out"
    materialize(cache, manifest, out)
    materialize(cache, manifest, out)  # again: nothing to do, nothing breaks
    assert (out / "dir" / "a.bin").read_bytes() == a
    assert (out / "dir" / "a.bin").stat().st_ino == cache.blob_path(
        manifest.files[0].digest
    ).stat().st_ino
    assert (out / "run.sh").stat().st_mode & 0o111 == 0o111  # bits: as root X_OK needs just one
    assert sorted(p.name for p in out.rglob("*")) == ["a.bin", "dir", "run.sh"]
    cache.close()


def test_refs_and_manifests_are_written(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    digest = digest_bytes(b"{}")
    cache.write_ref("team/m", "v1", digest)
    cache.save_manifest(digest, b"{}")
    assert (tmp_path / "refs" / "team" / "m" / "v1").read_text() == digest
    assert (tmp_path / "manifests" / f"{digest.split(':')[1]}.json").read_bytes() == b"{}"
    cache.close()
