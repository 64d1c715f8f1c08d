"""Node cache pieces without a server: sizes, progress records, selection, locks, modes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wreg._cache import NodeCache, acquire
from wreg._cache_ops import parse_size, resolve_offline
from wreg._pull import select_files
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode, IntegrityError, InvalidInput
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.core.reference import Reference
from wreg.testing.procs import stop_process


def _entry(path: str, data: bytes, pieces: int = 4) -> FileEntry:
    step = len(data) // pieces
    cuts = [data[i * step : (i + 1) * step if i < pieces - 1 else len(data)] for i in range(pieces)]
    chunks = tuple(ChunkRef(digest_bytes(c), len(c)) for c in cuts)
    return FileEntry.of(path, chunks)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("1000", 1000), ("500M", 500_000_000), ("1.5GiB", 3 << 29), ("2T", 2 * 10**12)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-1G"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid size"):
        parse_size(text)


def test_progress_record_survives_a_torn_last_line(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    entry = _entry("w.bin", os.urandom(4000))
    cache.temp_path(entry.digest).write_bytes(bytes(entry.size))
    fd = cache.start_progress(entry)
    os.write(fd, b"0\n2\n3")  # killed while appending "3\n"
    os.close(fd)
    assert cache.read_progress(entry) == {0, 2}
    # A record for another size, or without its .part, vouches for nothing.
    cache.temp_path(entry.digest).write_bytes(b"short")
    assert cache.read_progress(entry) == set()
    cache.temp_path(entry.digest).unlink()
    assert cache.read_progress(entry) == set()
    cache.close()


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_private_cache_follows_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        cache = NodeCache(tmp_path / "home" / ".cache" / "wreg")
        data = os.urandom(100)
        entry = _entry("a", data, 1)
        temp = cache.temp_path(entry.digest)
        temp.write_bytes(data)
        blob = cache.commit_blob(temp, entry)
    finally:
        os.umask(old)
    root = tmp_path / "home" / ".cache" / "wreg"
    assert not cache.sharing.group
    for sub in ("", "blobs", "tmp", "locks", "snapshots", "refs", "manifests"):
        assert _mode(root / sub) == 0o700, sub
    assert _mode(root / "index.sqlite") == 0o600
    assert _mode(blob) == 0o444 & ~umask
    # Directories above the cache root get the umask's default, nothing wider.
    assert _mode(tmp_path / "home" / ".cache") == 0o777 & ~umask
    cache.close()


def test_a_directory_the_cache_did_not_create_is_never_widened(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o750)
    (root / "blobs").mkdir(mode=0o711)
    os.chmod(root, 0o750)  # noqa: S103 - whatever the umask did
    os.chmod(root / "blobs", 0o711)  # noqa: S103
    NodeCache(root).close()
    NodeCache(root, sharing="group").close()
    assert _mode(root) == 0o750
    assert _mode(root / "blobs") == 0o711
    assert _mode(root / "snapshots") == 0o700  # created by the first, private, open


def test_group_cache_is_setgid_and_sticky(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    os.chmod(root, 0o2775)  # noqa: S103 - chgrp G root; chmod 2775 root: the cache becomes G's
    old = os.umask(0o077)
    try:
        cache = NodeCache(root)
    finally:
        os.umask(old)
    assert cache.sharing.group
    for sub in ("blobs", "snapshots", "refs", "manifests"):
        assert _mode(root / sub) == 0o3775, sub  # nobody replaces another member's files
    for sub in ("tmp", "locks"):
        assert _mode(root / sub) == 0o2775, sub  # anyone clears a stale lock or part file
    assert _mode(root / "index.sqlite") == 0o664
    data = os.urandom(100)
    entry = _entry("a", data, 1)
    temp = cache.temp_path(entry.digest)
    temp.write_bytes(data)
    assert _mode(cache.commit_blob(temp, entry)) == 0o444
    fd = cache.start_progress(entry)
    os.close(fd)
    assert _mode(cache.progress_path(entry.digest)) == 0o644  # its owner alone writes it
    cache.close()


def test_a_blob_whose_stat_changed_is_rehashed_before_use(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    data = os.urandom(1000)
    entry = _entry("w.bin", data, 2)
    temp = cache.temp_path(entry.digest)
    temp.write_bytes(data)
    blob = cache.commit_blob(temp, entry)
    st = blob.stat()
    assert cache.blob_trusted(blob.name, st)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime moves: no longer vouched for
    assert not cache.blob_trusted(blob.name, blob.stat())
    assert cache.has_blob(entry)  # re-hashed: still right, and trusted again
    assert cache.blob_trusted(blob.name, blob.stat())
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # as through a hardlinked -o file
        f.write(b"\0" * 10)
    blob.chmod(0o444)
    assert not cache.has_blob(entry)
    assert not blob.exists()  # removed, so the next pull fetches it again
    assert cache.locate_chunks([c.digest for c in entry.chunks]) == {}
    cache.close()


def test_chunk_index_rows_outside_blobs_are_ignored(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    data = os.urandom(1000)
    entry = _entry("w.bin", data, 2)
    temp = cache.temp_path(entry.digest)
    temp.write_bytes(data)
    blob = cache.commit_blob(temp, entry)
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(1000))
    rows = [
        ("blake3:" + "1" * 64, "../../secret", 0, 10),  # not a blob name
        ("blake3:" + "2" * 64, blob.name, 990, 20),  # past the blob's end
        ("blake3:" + "3" * 64, blob.name, -5, 10),
        ("blake3:" + "4" * 64, "a" * 64, 0, 10),  # no such blob
    ]
    cache._db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)", rows)
    (cache.layout.blobs_dir / ("5" * 64)).symlink_to(secret)  # a planted link
    cache._db.execute("INSERT INTO chunks VALUES (?, ?, 0, 10)", ("blake3:" + "6" * 64, "5" * 64))
    assert cache.locate_chunks([r[0] for r in rows] + ["blake3:" + "6" * 64]) == {}
    cache.close()


def test_cached_manifest_must_match_its_name(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    manifest = Manifest.build([_entry("a", b"x" * 100, 1)])
    other = Manifest.build([_entry("b", b"y" * 100, 1)])
    cache.save_manifest(manifest.digest, manifest.to_json_bytes())
    assert cache.load_manifest(manifest.digest) == manifest
    cache.manifest_path(manifest.digest).chmod(0o644)
    cache.manifest_path(manifest.digest).write_bytes(other.to_json_bytes())
    with pytest.raises(IntegrityError, match="does not match its name") as refused:
        cache.load_manifest(manifest.digest)
    assert refused.value.code is ErrorCode.CACHE_UNTRUSTED
    with pytest.raises(IntegrityError, match="does not match its name"):
        resolve_offline(cache, Reference.parse(f"team/m@{manifest.digest}"))
    cache.save_manifest(manifest.digest, manifest.to_json_bytes())  # online: replaced
    assert cache.load_manifest(manifest.digest) == manifest
    cache.close()


def test_select_files_uses_fnmatch_on_paths() -> None:
    manifest = Manifest.build(
        [_entry(p, p.encode() * 10, 1) for p in ("a.safetensors", "sub/b.safetensors", "c.bin")]
    )
    assert [e.path for e in select_files(manifest, ["*.safetensors"])] == [
        "a.safetensors",
        "sub/b.safetensors",
    ]
    assert [e.path for e in select_files(manifest, (), ["sub/*", "*.bin"])] == ["a.safetensors"]
    with pytest.raises(InvalidInput, match="no file of the model matches"):
        select_files(manifest, ["*.gguf"])


_HOLDER = """
import sys, time
from pathlib import Path
from wreg._cache import NodeCache
lock = NodeCache(Path(sys.argv[1])).lock("file-x")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_lock_of_a_killed_holder_is_taken_over_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen(  # noqa: S603 - this interpreter, the lock holder script above
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        cache = NodeCache(tmp_path)
        lock = cache.lock("file-x")
        assert not asyncio.run(acquire(lock, wait=False))  # a live holder keeps it
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        start = time.monotonic()
        assert asyncio.run(acquire(lock))
        assert time.monotonic() - start < 5
        lock.release()
        cache.close()
    finally:
        stop_process(holder)
