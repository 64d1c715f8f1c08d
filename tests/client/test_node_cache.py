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
from wreg._cache_ops import parse_size
from wreg._pull import select_files
from wreg.core.digest import digest_bytes
from wreg.core.errors import InvalidInput
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.testing.procs import stop_process


def _entry(path: str, data: bytes, pieces: int = 4) -> FileEntry:
    step = len(data) // pieces
    cuts = [data[i * step : (i + 1) * step if i < pieces - 1 else len(data)] for i in range(pieces)]
    chunks = tuple(ChunkRef(digest_bytes(c), len(c)) for c in cuts)
    return FileEntry(path, len(data), digest_bytes(data), 0o644, chunks)


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


def test_cache_directories_are_shared_and_blobs_read_only(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        cache = NodeCache(tmp_path / "cache")
    finally:
        os.umask(old)
    for sub in ("blobs", "tmp", "locks", "snapshots"):
        assert (tmp_path / "cache" / sub).stat().st_mode & 0o7777 == 0o2775
    data = os.urandom(100)
    entry = _entry("a", data, 1)
    temp = cache.temp_path(entry.digest)
    temp.write_bytes(data)
    assert cache.commit_blob(temp, entry).stat().st_mode & 0o777 == 0o444
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
