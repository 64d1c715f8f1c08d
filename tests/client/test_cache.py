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


def test_materialize_records_the_links_it_makes_and_removes(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    a, b = os.urandom(1000), os.urandom(1000)
    # Two paths with the same content: one blob, linked twice in one -o.
    v1 = Manifest.build([_entry("w.bin", a), _entry("copy/w.bin", a), _entry("x.bin", b)])
    for f, data in ((v1.files[0], a), (v1.files[2], b)):
        _commit(cache, f, data)
    blob_a, blob_b = (cache.blob_path(f.digest) for f in (v1.files[0], v1.files[2]))
    for n in range(2):
        out = tmp_path / f"out{n}"
        materialize(cache, v1, out)
        for path, blob in (("w.bin", blob_a), ("copy/w.bin", blob_a), ("x.bin", blob_b)):
            assert (out / path).stat().st_ino == blob.stat().st_ino  # linked, never copied
        # Each link moved the blob's ctime; each was recorded: still trusted, unread.
        assert cache.blob_trusted(blob_a.name, blob_a.stat())
        assert cache.blob_trusted(blob_b.name, blob_b.stat())
    assert blob_a.stat().st_nlink == 5
    # --force over out0 with other content at x.bin: the link to blob_b is removed.
    c = os.urandom(1000)
    v2 = Manifest.build([_entry("x.bin", c)])
    _commit(cache, v2.files[0], c)
    materialize(cache, v2, tmp_path / "out0", force=True)
    assert (tmp_path / "out0" / "x.bin").read_bytes() == c
    assert blob_b.stat().st_nlink == 2
    assert cache.blob_trusted(blob_b.name, blob_b.stat())
    cache.close()


def test_note_link_carries_trust_only_across_exactly_its_own_link(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    data = os.urandom(1000)
    entry = _entry("w.bin", data)
    blob = _commit(cache, entry, data)
    before = blob.stat()
    os.link(blob, tmp_path / "one")
    os.link(blob, tmp_path / "two")  # someone else's link meanwhile: two more, not one
    assert cache.note_link(blob.name, before, 1) is None
    assert not cache.blob_trusted(blob.name, blob.stat())
    assert cache.has_blob(entry)  # re-hashed, found intact: recorded again
    assert cache.blob_trusted(blob.name, blob.stat())

    before = blob.stat()
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # an edit (mtime moves) around our own link
        f.write(b"\0" * 10)
    blob.chmod(0o444)
    os.link(blob, tmp_path / "three")
    assert cache.note_link(blob.name, before, 1) is None
    assert not cache.blob_trusted(blob.name, blob.stat())
    # Nor is trust created: a stat that was not trusted before the link stays so.
    stale = blob.stat()
    (tmp_path / "three").unlink()
    assert cache.note_link(blob.name, stale, -1) is None
    assert not cache.has_blob(entry)  # the edit is caught, the blob removed
    assert not blob.exists()
    cache.close()
