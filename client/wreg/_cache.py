"""The node cache under ``$WREG_CACHE`` (default ``~/.cache/wreg``): its index, blobs,
partial files, snapshots and locks. Where each lives is drawn, and built, in
``wreg._cache_layout``; operations on whole snapshots (offline resolve, ``-o DIR``,
list, prune, pin, verify) are in ``wreg._cache_ops``.

A file only ever appears under ``blobs/`` by an atomic rename after its whole-file
digest has been checked, so a reader never sees half a file, whatever was killed when.

Sharing: directories are created group-writable with the setgid bit (``2775``) so every
member of the directory's group can pull into the cache; blobs are read-only for
everyone. Give the cache root the group you want (``chgrp``) once.

Locks are ``filelock.SoftFileLease`` markers: created with ``O_EXCL`` (which NFS v3+,
Lustre and GPFS honour, unlike ``flock``, which they may silently keep node-local or
refuse), recording pid, host and process start time, and refreshed by a heartbeat
thread. A holder that died on this host is detected at once (its pid is gone); one on
another host once its marker has not been refreshed for ``LEASE_SECONDS``. The locks
only prevent duplicate work: correctness rests on verification and atomic renames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from wreg._cache_layout import CacheLayout, is_hex, staging
from wreg.core.digest import digest_of_hex, hex_of
from wreg.core.manifest import FileEntry, Manifest

if TYPE_CHECKING:
    from filelock import SoftFileLease

DIR_MODE: Final = 0o2775
FILE_MODE: Final = 0o664
BLOB_MODE: Final = 0o444
LEASE_SECONDS: Final = 30.0
POLL_SECONDS: Final = 0.1
"""How often a wait for a lock (or for the file another process holds it for) looks again."""
_PROGRESS_MAGIC: Final = "wreg-progress 1"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS chunks (digest TEXT PRIMARY KEY, blob TEXT NOT NULL,"
    " offset INTEGER NOT NULL, length INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS chunks_blob ON chunks (blob)",
    "CREATE TABLE IF NOT EXISTS snapshots (repo TEXT NOT NULL, manifest TEXT NOT NULL,"
    " last_used REAL NOT NULL, pinned INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (repo, manifest))",
    "CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,"
    " device INTEGER NOT NULL, chunker TEXT NOT NULL, digest TEXT NOT NULL,"
    " chunks TEXT NOT NULL)",
)


class ChunkLocation(NamedTuple):
    """Where a cached blob holds a chunk."""

    blob: Path
    offset: int
    length: int


class HashedChunk(NamedTuple):
    """A chunk of a pushed file: its byte range, dtype hint for the codec, and digest.

    Stored in the stat cache as the JSON array ``[offset, length, dtype, digest]``.
    """

    offset: int
    length: int
    dtype: str | None
    digest: str


class KnownFile(NamedTuple):
    """What the stat cache remembers of an unchanged file."""

    digest: str
    chunks: list[HashedChunk]


class StatRecord(NamedTuple):
    """A hashed file to remember in the stat cache, with the stat it was hashed under."""

    path: Path
    st: os.stat_result
    digest: str
    chunks: list[HashedChunk]


class StatKey(NamedTuple):
    """What must not have changed for the stat cache to vouch for a file."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    chunker: str


def make_dir(path: Path) -> None:
    """``mkdir -p`` whose new directories are group-writable and setgid (shared caches)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):
            os.chmod(d, DIR_MODE)


def share_file(path: Path | int, mode: int = FILE_MODE) -> None:
    """Set ``mode`` whatever the umask (a path or an open descriptor); best effort."""
    with contextlib.suppress(OSError):
        if isinstance(path, int):
            os.fchmod(path, mode)
        else:
            os.chmod(path, mode)


def _enter_wal(db: sqlite3.Connection, deadline_s: float = 60.0) -> None:
    """Switch ``db`` to WAL, waiting out other processes that open the same fresh index.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once
    instead of calling its busy handler while another connection is mid-switch (seen
    with three pulls starting together on a new cache), so retry until ``deadline_s``.
    """
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > give_up:
                raise
            time.sleep(0.02)


class NodeCache:
    """The node cache; one per process and directory, not thread-safe (use from one loop)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self.layout = CacheLayout(self.root)
        for d in self.layout.dirs:
            make_dir(d)
        db_path = self.layout.index_db
        fresh = not db_path.exists()
        self._db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
        if fresh:
            share_file(db_path)
        _enter_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob(hex_of(digest))

    def has_blob(self, entry: FileEntry) -> bool:
        try:
            return self.blob_path(entry.digest).stat().st_size == entry.size
        except FileNotFoundError:
            return False

    def temp_path(self, digest: str) -> Path:
        """The file's assembly name under tmp/: deterministic, so a pull can resume it."""
        return self.layout.part(hex_of(digest))

    def progress_path(self, digest: str) -> Path:
        return self.layout.progress(hex_of(digest))

    def commit_blob(self, temp: Path, entry: FileEntry) -> Path:
        """Make a verified temp file the blob for ``entry`` and index its chunks."""
        final = self.blob_path(entry.digest)
        os.chmod(temp, BLOB_MODE)
        os.replace(temp, final)
        self.progress_path(entry.digest).unlink(missing_ok=True)
        self.index_chunks(entry)
        return final

    def remove_blob(self, hex_digest: str) -> None:
        """Forget a blob: its file and its rows in the chunk index."""
        self.layout.blob(hex_digest).unlink(missing_ok=True)
        self._db.execute("DELETE FROM chunks WHERE blob = ?", (hex_digest,))

    def index_chunks(self, entry: FileEntry) -> None:
        rows = [(c.digest, hex_of(entry.digest), off, c.size) for off, c in entry.chunk_offsets()]
        self._db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)", rows)

    def locate_chunks(self, digests: Iterable[str]) -> dict[str, ChunkLocation]:
        """Chunks some cached blob already holds: digest -> where."""
        found: dict[str, ChunkLocation] = {}
        wanted = list(digests)
        present: dict[str, bool] = {}
        for i in range(0, len(wanted), 500):
            batch = wanted[i : i + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT digest, blob, offset, length FROM chunks WHERE digest IN ({marks})"  # noqa: S608 - only "?" marks
            for digest, blob, offset, length in self._db.execute(query, batch):
                path = self.layout.blob(blob)
                if blob not in present:
                    present[blob] = path.exists()
                if present[blob]:
                    found[digest] = ChunkLocation(path, offset, length)
        return found

    # -- partial files and their progress records --------------------------------

    def read_progress(self, entry: FileEntry) -> set[int]:
        """Chunk indices of ``tmp/<hex>.part`` recorded as written and verified."""
        try:
            text = self.progress_path(entry.digest).read_text()
            part_size = self.temp_path(entry.digest).stat().st_size
        except (FileNotFoundError, UnicodeDecodeError):
            return set()
        lines = text.split("\n")
        if lines[0] != f"{_PROGRESS_MAGIC} {entry.digest} {entry.size}" or part_size > entry.size:
            return set()
        # The part file grows as chunks land (sparse, in any order): a recorded chunk
        # counts only if the file reaches its end.
        ends = [offset + chunk.size for offset, chunk in entry.chunk_offsets()]
        done = set()
        for line in lines[1:-1]:  # the last piece has no newline yet: maybe half-written
            for word in line.split():
                if word.isdigit() and int(word) < len(ends) and ends[int(word)] <= part_size:
                    done.add(int(word))
        return done

    def start_progress(self, entry: FileEntry) -> int:
        """Open (creating if needed) the progress record for appending; returns its fd."""
        path = self.progress_path(entry.digest)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        if os.fstat(fd).st_size == 0:
            os.write(fd, f"{_PROGRESS_MAGIC} {entry.digest} {entry.size}\n".encode())
        share_file(fd)
        return fd

    def reset_partial(self, entry: FileEntry) -> None:
        self.temp_path(entry.digest).unlink(missing_ok=True)
        self.progress_path(entry.digest).unlink(missing_ok=True)

    # -- locks -------------------------------------------------------------------

    def lease(self, path: Path) -> SoftFileLease:
        """A lease on the lock file ``path`` (see the module docstring for why this kind)."""
        from filelock import SoftFileLease

        return SoftFileLease(
            path,
            lease_duration=LEASE_SECONDS,
            mode=FILE_MODE,
            thread_local=False,
            is_singleton=False,
        )

    def lock(self, name: str) -> SoftFileLease:
        """A lease on ``locks/<name>.lock``."""
        return self.lease(self.layout.lock(name))

    def file_lock(self, digest: str) -> SoftFileLease:
        return self.lease(self.layout.file_lock(hex_of(digest)))

    def snapshot_lock(self, manifest_digest: str) -> SoftFileLease:
        return self.lease(self.layout.snapshot_lock(hex_of(manifest_digest)))

    def warm_lock(self) -> SoftFileLease:
        return self.lease(self.layout.warm_lock())

    def prune_lock(self) -> SoftFileLease:
        return self.lease(self.layout.prune_lock())

    # -- manifests, refs and snapshots -------------------------------------------

    def manifest_path(self, digest: str) -> Path:
        return self.layout.manifest(hex_of(digest))

    def save_manifest(self, digest: str, body: bytes) -> None:
        path = self.manifest_path(digest)
        if not path.exists():
            _atomic_write(path, body)

    def load_manifest(self, digest: str) -> Manifest | None:
        try:
            body = self.manifest_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        return Manifest.from_json_bytes(body)

    def write_ref(self, name: str, tag: str, digest: str) -> None:
        path = self.layout.ref(name, tag)
        make_dir(path.parent)
        _atomic_write(path, digest.encode())

    def read_ref(self, name: str, tag: str) -> str | None:
        try:
            return self.layout.ref(name, tag).read_text().strip()
        except FileNotFoundError:
            return None

    def refs(self) -> Iterator[tuple[str, str, str]]:
        """Every (repository, tag, manifest digest) recorded under refs/."""
        base = self.layout.refs_dir
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                rel = path.relative_to(base)
                yield rel.parent.as_posix(), rel.name, path.read_text().strip()

    def remove_ref(self, name: str, tag: str) -> None:
        self.layout.ref(name, tag).unlink(missing_ok=True)

    def snapshot_dir(self, name: str, manifest_digest: str) -> Path:
        return self.layout.snapshot(name, hex_of(manifest_digest))

    def snapshots(self) -> Iterator[tuple[str, str]]:
        """Every (repository, manifest digest) with a directory under snapshots/."""
        base = self.layout.snapshots_dir
        for marker in sorted(base.rglob("*")):
            name = marker.name
            if is_hex(name) and marker.is_dir():
                yield marker.parent.relative_to(base).as_posix(), digest_of_hex(name)

    def build_snapshot(
        self, name: str, manifest: Manifest, files: Iterable[FileEntry] | None = None
    ) -> Path:
        """The model's tree (or the ``files`` of it) as relative symlinks to blobs.

        Each link is created under a temporary name and renamed, so a link that exists
        is whole; links already there are kept, so partial pulls add to the same tree.
        """
        final = self.snapshot_dir(name, manifest.digest)
        make_dir(final)
        for entry in manifest.files if files is None else files:
            link = final / entry.path
            target = os.path.relpath(self.blob_path(entry.digest), final / Path(entry.path).parent)
            with contextlib.suppress(OSError):
                if os.readlink(link) == target:
                    continue
            make_dir(link.parent)
            staged = staging(link)
            staged.symlink_to(target)
            os.replace(staged, link)
        return final

    # -- use tracking and pins ---------------------------------------------------

    def touch_snapshot(self, name: str, manifest_digest: str) -> None:
        self._db.execute(
            "INSERT INTO snapshots (repo, manifest, last_used) VALUES (?, ?, ?)"
            " ON CONFLICT (repo, manifest) DO UPDATE SET last_used = excluded.last_used",
            (name, manifest_digest, time.time()),
        )

    def set_pinned(self, name: str, manifest_digest: str, pinned: bool) -> None:
        self._db.execute(
            "INSERT INTO snapshots (repo, manifest, last_used, pinned) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (repo, manifest) DO UPDATE SET pinned = excluded.pinned",
            (name, manifest_digest, time.time(), int(pinned)),
        )

    def snapshot_info(self) -> dict[tuple[str, str], tuple[float, bool]]:
        """(repository, manifest) -> (last use, pinned) from the index."""
        rows = self._db.execute("SELECT repo, manifest, last_used, pinned FROM snapshots")
        return {(r, m): (float(t), bool(p)) for r, m, t, p in rows}

    def forget_snapshot(self, name: str, manifest_digest: str) -> None:
        shutil.rmtree(self.snapshot_dir(name, manifest_digest), ignore_errors=True)
        self._db.execute(
            "DELETE FROM snapshots WHERE repo = ? AND manifest = ?", (name, manifest_digest)
        )
        repo_dir = self.layout.snapshot_repo(name)
        with contextlib.suppress(OSError):
            repo_dir.rmdir()

    # -- push stat cache ---------------------------------------------------------

    def stat_lookup(self, path: Path, st: os.stat_result, chunker: str) -> KnownFile | None:
        """The file's digest and chunks if ``path`` is unchanged since they were stored."""
        row = self._db.execute(
            "SELECT size, mtime_ns, ctime_ns, inode, device, chunker, digest, chunks"
            " FROM stat_cache WHERE path = ?",
            (str(path),),
        ).fetchone()
        if row is None or tuple(row[:6]) != _stat_key(st, chunker):
            return None
        chunks = [HashedChunk(int(o), int(n), d, str(c)) for o, n, d, c in json.loads(row[7])]
        return KnownFile(str(row[6]), chunks)

    def stat_store(self, entries: list[StatRecord], chunker: str) -> None:
        rows = [
            (str(p), *_stat_key(st, chunker), digest, json.dumps(chunks, separators=(",", ":")))
            for p, st, digest, chunks in entries
        ]
        self._db.executemany(
            "INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )

    def stat_forget(self, path: Path) -> None:
        self._db.execute("DELETE FROM stat_cache WHERE path = ?", (str(path),))


def _stat_key(st: os.stat_result, chunker: str) -> StatKey:
    return StatKey(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, chunker)


async def acquire(lock: SoftFileLease, wait: bool = True) -> bool:
    """Take ``lock`` without blocking the event loop; with ``wait=False`` try once."""
    from filelock import Timeout

    while True:
        try:
            lock.acquire(blocking=False)
            return True
        except Timeout:
            if not wait:
                return False
        await asyncio.sleep(POLL_SECONDS)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = staging(path)
    tmp.write_bytes(data)
    share_file(tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def opened_cache(root: Path) -> Iterator[NodeCache]:
    cache = NodeCache(root)
    try:
        yield cache
    finally:
        cache.close()
