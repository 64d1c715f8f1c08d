"""The node cache under ``$WREG_CACHE`` (default ``~/.cache/wreg``): its index, blobs,
partial files, snapshots and locks. Where each lives is drawn, and built, in
``wreg._cache_layout``; operations on whole snapshots (offline resolve, ``-o DIR``,
list, prune, pin, verify) are in ``wreg._cache_ops``.

A file only ever appears under ``blobs/`` by an atomic rename after its whole-file
digest has been checked, so a reader never sees half a file, whatever was killed when.

Sharing (``Sharing``): a cache is **private** unless ``WREG_CACHE_SHARED=group``, or its
root already exists group-writable with the setgid bit (``chgrp G root; chmod 2775
root``). A private cache's directories are created ``0700`` and its files ``0600`` (the
umask can narrow them further), its blobs ``0444`` less the umask. A **group** cache's
directories are created ``3775`` (setgid, and sticky so nobody replaces or removes
another member's files; ``tmp/`` and ``locks/`` are ``2775``, since a stale lock or
partial file of anyone must be cleared), the index and locks ``0664``, blobs ``0444``,
partial files ``0644`` (only their owner writes them). Directories the cache did not
create are never chmodded.

Trust: a cached file is only what its name says once checked. A blob is used as is only
if it is a read-only regular file owned by the caller, root or a uid of
``WREG_CACHE_TRUSTED_UIDS``, and its size, mtime, ctime and inode are those recorded
(``blob_stats``: an edit through a hardlinked ``-o`` file changes them, and ctime cannot
be set back without root); any other blob is re-hashed first, and one that fails is
removed (or, if it cannot be, refused: ``CACHE_UNTRUSTED``). A stat is recorded when the
blob is committed, when a re-hash finds it intact (the ``fstat`` of the descriptor just
hashed, unchanged by the read and still the inode at the blob's name), and when this
process adds or removes a hard link to a trusted blob (``note_link``: a link moves
ctime, so ``-o DIR`` would otherwise cost a re-hash on every later pull); only such a
link's own change is taken: the same inode, size, mtime, mode and owner, exactly one
link more or fewer. A link made or removed by anyone else (``rm -r`` of an ``-o DIR``,
``cp -al``) costs one re-hash. A
manifest must hash to its file name; a ref must be owned by a trusted uid; the chunk
index may only name byte ranges inside a regular file under ``blobs/``, and a chunk
seeded from an untrusted blob is hashed before it is written.

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
import errno
import io
import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from wreg import _buffers
from wreg._cache_layout import CacheLayout, is_hex, staging
from wreg.core.digest import Hasher, digest_bytes, digest_of_hex, file_identity, hex_of
from wreg.core.errors import ErrorCode
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.core.sizes import MAX_CHUNK_RAW

if TYPE_CHECKING:
    from filelock import SoftFileLease

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
    "CREATE TABLE IF NOT EXISTS blob_stats (blob TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL)",
    # The chunk list of each schema-2 blob (packed: 32 digest bytes + 8-byte LE size per
    # chunk), so the blob can be re-verified against its name without a manifest.
    "CREATE TABLE IF NOT EXISTS blob_chunks (blob TEXT PRIMARY KEY, chunks BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS stat_cache (path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,"
    " device INTEGER NOT NULL, chunker TEXT NOT NULL, digest TEXT NOT NULL,"
    " chunks TEXT NOT NULL)",
)


SharingSetting = Literal["auto", "group", "private"]
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Opening a cached file: never through a symlink, never blocking on a planted FIFO."""


class Sharing(NamedTuple):
    """The modes a cache creates its directories and files with (module docstring)."""

    group: bool
    dir_mode: int
    """Directories whose entries only their owner may replace (sticky in a group cache)."""
    open_dir_mode: int
    """``tmp/`` and ``locks/``: anyone sharing the cache clears stale entries there."""
    file_mode: int
    """Files every user of the cache writes: the index, lock markers."""
    own_file_mode: int
    """Files only their owner writes: partial files, progress records, refs."""
    blob_mode: int
    """Blobs and manifests: read-only."""

    @classmethod
    def choose(cls, root: Path, setting: SharingSetting = "auto") -> Sharing:
        """Group if asked, or if ``root`` already exists group-writable and setgid."""
        group = setting == "group"
        if setting == "auto":
            with contextlib.suppress(OSError):
                mode = root.stat().st_mode
                group = mode & (stat.S_ISGID | stat.S_IWGRP) == stat.S_ISGID | stat.S_IWGRP
        if group:
            return cls(True, 0o3775, 0o2775, 0o664, 0o644, 0o444)
        umask = os.umask(0o022)
        os.umask(umask)
        return cls(False, 0o700, 0o700, 0o600, 0o600, (0o444 & ~umask) | 0o400)


def trusted_uids(extra: Iterable[int] = ()) -> frozenset[int]:
    """Owners whose read-only blobs are used without re-hashing: the caller, root (who
    can change any file anyway) and ``extra`` (``WREG_CACHE_TRUSTED_UIDS``)."""
    return frozenset({os.geteuid(), 0, *extra})


class BlobStat(NamedTuple):
    """What must not have changed since a blob was committed for it to be used unread."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> BlobStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class ChunkLocation(NamedTuple):
    """Where a cached blob holds a chunk; ``trusted``: the blob needs no re-check (an
    untrusted one's chunk is hashed before use)."""

    blob: Path
    offset: int
    length: int
    trusted: bool = True


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


def make_dir(path: Path, mode: int, root: Path, force_mode: bool) -> None:
    """``mkdir -p``: new directories at or below ``root`` get ``mode`` (exactly, whatever
    the umask, if ``force_mode``: a group cache), those above it the umask's default;
    a directory that already exists is never touched."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        inside = d == root or root in d.parents
        try:
            d.mkdir(mode if inside else 0o777)
        except FileExistsError:
            continue
        if inside and force_mode:
            with contextlib.suppress(OSError):
                os.chmod(d, mode)


def share_file(path: Path | int, mode: int) -> None:
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

    def __init__(
        self,
        root: Path,
        sharing: SharingSetting = "auto",
        trusted: Iterable[int] = (),
    ) -> None:
        self.root = root.expanduser()
        self.layout = CacheLayout(self.root)
        self.sharing = Sharing.choose(self.root, sharing)
        self.trusted = trusted_uids(trusted)
        self._verified: dict[str, BlobStat] = {}  # blobs re-hashed by this process
        open_dirs = (self.layout.tmp_dir, self.layout.locks_dir)
        self.make_dir(self.root)
        for d in self.layout.dirs:
            self.make_dir(d, self.sharing.open_dir_mode if d in open_dirs else None)
        db_path = self.layout.index_db
        fresh = not db_path.exists()
        if fresh:  # created with its final mode, so it is never readable by more than that
            with contextlib.suppress(FileExistsError):
                os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                share_file(db_path, self.sharing.file_mode)
        self._db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
        _enter_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    def make_dir(self, path: Path, mode: int | None = None) -> None:
        """``mkdir -p`` with this cache's mode for the directories it creates."""
        mode = self.sharing.dir_mode if mode is None else mode
        make_dir(path, mode, self.root, self.sharing.group)

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob(hex_of(digest))

    def has_blob(self, entry: FileEntry) -> bool:
        """Whether the blob for ``entry`` is there and holds its bytes.

        A trusted blob (``blob_trusted``) is taken as it is; any other is re-hashed once
        per process and stat, and removed if it does not match (``CACHE_UNTRUSTED`` if
        it cannot be: another member's file in a group cache).
        """
        file_hex = hex_of(entry.digest)
        st = self.blob_stat(file_hex)
        if st is None or st.st_size != entry.size:
            if st is not None:
                self.discard_blob(file_hex, st, "is not the size its manifest says")
            return False
        if self.blob_trusted(file_hex, st) or self._verified.get(file_hex) == BlobStat.of(st):
            return True
        if self.rehash_blob(file_hex, entry):
            return True
        self.discard_blob(file_hex, st, "does not match its digest")
        return False

    def open_blob(self, entry: FileEntry) -> int | None:
        """A read-only descriptor of the blob for ``entry`` once ``has_blob`` holds, checked
        on the descriptor itself (the inode opened is the one trusted or re-hashed, not one
        swapped in under the name since); None when there is no such blob."""
        if not self.has_blob(entry):
            return None
        file_hex = hex_of(entry.digest)
        try:
            fd = os.open(self.layout.blob(file_hex), _READ_FLAGS)
        except OSError:
            return None
        st = os.fstat(fd)
        if st.st_size == entry.size and (
            self.blob_trusted(file_hex, st) or self._verified.get(file_hex) == BlobStat.of(st)
        ):
            return fd
        os.close(fd)
        return None

    def adopt_blob(self, entry: FileEntry) -> bool:
        """Give a schema-2 file the blob that already holds it whole under another name
        (a schema-1 blob: the same chunks at the same offsets), by a hard link, instead
        of assembling a copy: how caches from before schema 2 migrate, one file at a
        time, as pulls need them. Only a trusted blob is adopted (``blob_trusted``); its
        chunk list is the entry's, so the new name is the identity of what it holds."""
        if not entry.built_from_chunks or not entry.chunks:
            return False
        found = self.locate_chunks(c.digest for c in entry.chunks)
        places = [found.get(c.digest) for _, c in entry.chunk_offsets()]
        first = places[0]
        if first is None or not first.trusted:
            return False
        for place, (offset, chunk) in zip(places, entry.chunk_offsets(), strict=True):
            if place is None or (place.blob, place.offset, place.length) != (
                first.blob,
                offset,
                chunk.size,
            ):
                return False
        source_hex = first.blob.name
        st = self.blob_stat(source_hex)
        if st is None or st.st_size != entry.size:
            return False
        file_hex = hex_of(entry.digest)
        if not self.blob_trusted(source_hex, st):
            return False
        try:
            os.link(first.blob, self.layout.blob(file_hex), follow_symlinks=False)
        except FileExistsError:
            return self.has_blob(entry)
        except OSError:  # another member's inode (protected_hardlinks), another device
            return False
        linked = self.note_link(source_hex, st, 1)  # the link moved the inode's ctime
        if linked is not None:  # else the new name has no record: re-hashed before use
            self.record_blob(file_hex, linked)
        self.index_chunks(entry)
        return True

    def blob_present(self, entry: FileEntry) -> bool:
        """Whether a file of the right size is there (no trust check: listings)."""
        st = self.blob_stat(hex_of(entry.digest))
        return st is not None and st.st_size == entry.size

    def blob_stat(self, file_hex: str) -> os.stat_result | None:
        """``lstat`` of ``blobs/<hex>``; ``None`` if missing (or not a regular file, which
        is removed when possible: a symlink or FIFO planted there is never opened)."""
        path = self.layout.blob(file_hex)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return st

    def blob_trusted(self, file_hex: str, st: os.stat_result) -> bool:
        """Usable without reading: read-only, owned by a trusted uid, and unchanged
        (size, mtime, ctime, inode) since it was committed or last re-hashed."""
        if st.st_uid not in self.trusted or st.st_mode & 0o222:
            return False
        row = self._db.execute(
            "SELECT size, mtime_ns, ctime_ns, inode FROM blob_stats WHERE blob = ?", (file_hex,)
        ).fetchone()
        return row is not None and BlobStat(*row) == BlobStat.of(st)

    def rehash_blob(self, file_hex: str, entry: FileEntry | None = None) -> bool:
        """Re-hash ``blobs/<hex>`` against its name (``content_matches``: chunk by chunk
        for a schema-2 identity, whose chunk list comes from ``entry`` or the index); a
        match is remembered (in the index if the blob is trusted otherwise, so the next
        pull reads it no more).

        What is remembered is the ``fstat`` of the descriptor that was hashed, taken
        before the read, and only if the read changed nothing (the same stat after it)
        and the name still names that inode: never a stat of bytes nobody checked."""
        path = self.layout.blob(file_hex)
        chunks = self.blob_chunks(file_hex, entry)
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not content_matches(os.dup(fd), file_hex, chunks):
                return False
            hashed = os.fstat(fd)
        finally:
            os.close(fd)
        after = self.blob_stat(file_hex)
        if (
            after is None
            or (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino)
            or not BlobStat.of(after) == BlobStat.of(hashed) == BlobStat.of(st)
        ):  # changed as we read, or another file is there now
            return False
        self._verified[file_hex] = BlobStat.of(st)
        if st.st_uid in self.trusted and not st.st_mode & 0o222:
            self.record_blob(file_hex, st)
        return True

    def blob_chunks(self, file_hex: str, entry: FileEntry | None = None) -> list[ChunkRef] | None:
        """The chunk list a schema-2 blob's name is the identity of (from ``entry`` when it
        names this blob, else the index); None for a schema-1 blob (named by content)."""
        if entry is not None and hex_of(entry.digest) == file_hex and entry.built_from_chunks:
            return list(entry.chunks)
        row = self._db.execute(
            "SELECT chunks FROM blob_chunks WHERE blob = ?", (file_hex,)
        ).fetchone()
        return None if row is None else unpack_chunks(row[0])

    def record_blob(self, file_hex: str, st: os.stat_result | None = None) -> None:
        """Remember the blob's stat as the one it is trusted under."""
        st = st or self.layout.blob(file_hex).lstat()
        self._db.execute(
            "INSERT OR REPLACE INTO blob_stats VALUES (?, ?, ?, ?, ?)",
            (file_hex, *BlobStat.of(st)),
        )

    def note_link(
        self, file_hex: str, before: os.stat_result, delta: Literal[1, -1]
    ) -> os.stat_result | None:
        """After this process added (``delta`` 1) or removed (-1) one hard link to the
        blob, whose ``lstat`` just before was ``before``: record the stat the link left
        it with (a link moves ctime), and return it.

        Only trust is carried over, never created: ``before`` must have been trusted
        (``blob_trusted``), and the blob must now be the same inode with the same size,
        mtime, mode and owner, exactly ``delta`` links more and a ctime no earlier. Any
        other change (a write, another process linking it meanwhile) records nothing
        (None): the blob is re-hashed before its next use, as for any outside change.
        """
        if not self.blob_trusted(file_hex, before):
            return None
        st = self.blob_stat(file_hex)
        if st is None:
            return None
        keep = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_mode", "st_uid", "st_gid")
        if (
            any(getattr(st, k) != getattr(before, k) for k in keep)
            or st.st_nlink != before.st_nlink + delta
            or st.st_ctime_ns < before.st_ctime_ns
        ):
            return None
        self.record_blob(file_hex, st)
        return st

    def linked_blob(self, st: os.stat_result) -> tuple[str, os.stat_result] | None:
        """The blob (name and ``lstat``) whose inode ``st`` (a file outside the cache)
        is, if any: one the index records under that inode and the same device."""
        if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
            return None
        rows = self._db.execute("SELECT blob FROM blob_stats WHERE inode = ?", (st.st_ino,))
        for (file_hex,) in rows.fetchall():
            if not isinstance(file_hex, str) or not is_hex(file_hex):  # a damaged index
                continue
            blob = self.blob_stat(file_hex)
            if blob is not None and (blob.st_dev, blob.st_ino) == (st.st_dev, st.st_ino):
                return file_hex, blob
        return None

    def discard_blob(self, file_hex: str, st: os.stat_result, why: str) -> None:
        """Remove a blob that failed its check; refuse if it cannot be removed."""
        if not self.remove_blob(file_hex):
            raise ErrorCode.CACHE_UNTRUSTED.error(
                f"{self.layout.blob(file_hex)} {why} and cannot be removed (owned by uid"
                f" {st.st_uid}): ask its owner or an admin to delete it",
                detail={"blob": digest_of_hex(file_hex), "owner": st.st_uid},
            )

    def temp_path(self, digest: str) -> Path:
        """The file's assembly name under tmp/: deterministic, so a pull can resume it."""
        return self.layout.part(hex_of(digest))

    def progress_path(self, digest: str) -> Path:
        return self.layout.progress(hex_of(digest))

    def commit_blob(self, temp: Path, entry: FileEntry, fd: int | None = None) -> Path:
        """Make a verified temp file (open as ``fd``, if given) the blob for ``entry``,
        record its stat and index its chunks.

        Made read-only through ``fd`` before the rename, and the renamed file must be
        that same inode: a file swapped in under the temp name is never committed.
        """
        final = self.blob_path(entry.digest)
        mode = self.blob_mode(entry)
        if fd is None:
            fd = os.open(temp, _READ_FLAGS)
            try:
                return self.commit_blob(temp, entry, fd)
            finally:
                os.close(fd)
        os.fchmod(fd, mode)
        verified = os.fstat(fd)
        # Index first: a blob must never be there without its chunk list (schema 2), or
        # it could not be re-checked against its name; a failed write (a full disk)
        # leaves the temp file, not a blob.
        self.index_chunks(entry)
        os.replace(temp, final)
        st = final.lstat()
        if (st.st_dev, st.st_ino) != (verified.st_dev, verified.st_ino):
            self.remove_blob(hex_of(entry.digest))
            raise ErrorCode.CACHE_UNTRUSTED.error(
                f"{temp} was replaced by another file before it was committed; pull again"
            )
        self.progress_path(entry.digest).unlink(missing_ok=True)
        self.record_blob(hex_of(entry.digest), st)
        return final

    def blob_mode(self, entry: FileEntry) -> int:
        """Read-only, with the manifest's exec bit where it is readable."""
        mode = self.sharing.blob_mode
        return mode | (mode >> 2 & 0o111) if entry.mode & 0o111 else mode

    def remove_blob(self, hex_digest: str) -> bool:
        """Forget a blob: its file and its rows in the index. False if the file could
        not be removed (another member's, in a group cache's sticky ``blobs/``)."""
        try:
            self.layout.blob(hex_digest).unlink(missing_ok=True)
        except PermissionError:
            return False
        self._verified.pop(hex_digest, None)
        self._db.execute("DELETE FROM chunks WHERE blob = ?", (hex_digest,))
        self._db.execute("DELETE FROM blob_stats WHERE blob = ?", (hex_digest,))
        self._db.execute("DELETE FROM blob_chunks WHERE blob = ?", (hex_digest,))
        return True

    def index_chunks(self, entry: FileEntry) -> None:
        rows = [(c.digest, hex_of(entry.digest), off, c.size) for off, c in entry.chunk_offsets()]
        self._db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)", rows)
        if entry.built_from_chunks:
            self._db.execute(
                "INSERT OR REPLACE INTO blob_chunks VALUES (?, ?)",
                (hex_of(entry.digest), pack_chunks(entry.chunks)),
            )

    def locate_chunks(self, digests: Iterable[str]) -> dict[str, ChunkLocation]:
        """Chunks some cached blob already holds: digest -> where.

        The index is only a hint (anyone sharing the cache can write it): a row counts
        only if it names a regular file under ``blobs/`` by a hex name and a byte range
        inside it; ``trusted`` says whether the blob passes ``blob_trusted`` (if not,
        the seeding pull hashes the chunk before using it).
        """
        found: dict[str, ChunkLocation] = {}
        wanted = list(digests)
        blobs: dict[str, tuple[os.stat_result | None, bool]] = {}
        for i in range(0, len(wanted), 500):
            batch = wanted[i : i + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT digest, blob, offset, length FROM chunks WHERE digest IN ({marks})"  # noqa: S608 - only "?" marks
            for digest, blob, offset, length in self._db.execute(query, batch):
                if not (isinstance(blob, str) and is_hex(blob)):
                    continue
                if blob not in blobs:
                    st = self.blob_stat(blob)
                    blobs[blob] = (st, st is not None and self.blob_trusted(blob, st))
                st, trusted = blobs[blob]
                if not (isinstance(offset, int) and isinstance(length, int)):
                    continue
                if st is not None and offset >= 0 and length > 0 and offset + length <= st.st_size:
                    found[digest] = ChunkLocation(self.layout.blob(blob), offset, length, trusted)
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
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, self.sharing.own_file_mode
        )
        if os.fstat(fd).st_size == 0:
            os.write(fd, f"{_PROGRESS_MAGIC} {entry.digest} {entry.size}\n".encode())
        share_file(fd, self.sharing.own_file_mode)
        return fd

    def partial_is_mine(self, entry: FileEntry) -> bool:
        """Whether the partial file and its record are regular files of this user (only
        then is a pull resumed from them: another user's could change under it)."""
        me = os.geteuid()
        for path in (self.temp_path(entry.digest), self.progress_path(entry.digest)):
            try:
                st = path.lstat()
            except FileNotFoundError:
                return False
            if st.st_uid != me or not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
                return False
        return True

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
            mode=self.sharing.file_mode,
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
        """Store a verified manifest; one there that does not match its name is replaced
        (where this user may: see ``load_manifest``)."""
        path = self.manifest_path(digest)
        with contextlib.suppress(OSError):
            if _read_regular(path) == body:
                return
        with contextlib.suppress(PermissionError):
            self._atomic_write(path, body, self.sharing.blob_mode)

    def load_manifest(self, digest: str) -> Manifest | None:
        """The cached manifest ``digest``; ``None`` if absent. One whose bytes do not
        hash to its name is refused (``CACHE_UNTRUSTED``), never parsed."""
        path = self.manifest_path(digest)
        try:
            body = _read_regular(path)
        except FileNotFoundError:
            return None
        if digest_bytes(body) != digest:
            raise ErrorCode.CACHE_UNTRUSTED.error(
                f"{path} does not match its name (it hashes to {digest_bytes(body)}); "
                "refusing it: pull online to replace it, or have its owner remove it",
                detail={"manifest": digest},
            )
        return Manifest.from_json_bytes(body)

    def _atomic_write(self, path: Path, data: bytes, mode: int) -> None:
        tmp = staging(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
            share_file(f.fileno(), mode)
        os.replace(tmp, path)

    def write_ref(self, name: str, tag: str, digest: str) -> None:
        """Record the tag's manifest; best effort (another member's ref in a group
        cache's sticky ``refs/`` stays theirs)."""
        path = self.layout.ref(name, tag)
        self.make_dir(path.parent)
        with contextlib.suppress(PermissionError):
            self._atomic_write(path, digest.encode(), self.sharing.own_file_mode)

    def read_ref(self, name: str, tag: str) -> str | None:
        """The manifest digest recorded for the tag; ``None`` if none. A ref owned by
        an untrusted uid is refused (``CACHE_UNTRUSTED``): anyone sharing the cache can
        write a manifest that matches its name, so only the ref vouches for the tag."""
        path = self.layout.ref(name, tag)
        try:
            st = path.lstat()
            text = _read_regular(path).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        if st.st_uid not in self.trusted:
            raise ErrorCode.CACHE_UNTRUSTED.error(
                f"{path} is owned by uid {st.st_uid}, not you or a trusted uid"
                " (WREG_CACHE_TRUSTED_UIDS); pull online or by digest",
                detail={"ref": f"{name}@{tag}", "owner": st.st_uid},
            )
        return text

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
        self,
        name: str,
        manifest: Manifest,
        files: Iterable[FileEntry] | None = None,
        *,
        digest: str | None = None,
    ) -> Path:
        """The model's tree (or the ``files`` of it) as relative symlinks to blobs, under
        the manifest's ``digest`` (the one its bytes were verified against; computed
        from ``manifest`` if not given).

        Each link is created under a temporary name and renamed, so a link that exists
        is whole; links already there are kept, so partial pulls add to the same tree.
        """
        final = self.snapshot_dir(name, manifest.digest if digest is None else digest)
        self.make_dir(final)
        for entry in manifest.files if files is None else files:
            link = final / entry.path
            target = os.path.relpath(self.blob_path(entry.digest), final / Path(entry.path).parent)
            with contextlib.suppress(OSError):
                if os.readlink(link) == target:
                    continue
            self.make_dir(link.parent)
            staged = staging(link)
            staged.symlink_to(target)
            try:
                os.replace(staged, link)
            except PermissionError:  # another member's link, in a sticky directory
                staged.unlink(missing_ok=True)
                raise ErrorCode.CACHE_UNTRUSTED.error(
                    f"{link} is another user's and does not point at {target}; "
                    "ask its owner or an admin to remove the snapshot, or pull with -o"
                ) from None
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


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file (a planted FIFO or
    symlink): raises ``FileNotFoundError`` for those too."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ELOOP, errno.ENXIO):
            raise FileNotFoundError(str(path)) from None
        raise
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise FileNotFoundError(str(path))
        return f.read()


def pack_chunks(chunks: Iterable[ChunkRef]) -> bytes:
    return b"".join(bytes.fromhex(hex_of(c.digest)) + c.size.to_bytes(8, "little") for c in chunks)


def unpack_chunks(packed: bytes) -> list[ChunkRef] | None:
    """The list ``pack_chunks`` made; None if it is not one (a damaged index row)."""
    if len(packed) % 40:
        return None
    return [
        ChunkRef(
            digest_of_hex(packed[i : i + 32].hex()),
            int.from_bytes(packed[i + 32 : i + 40], "little"),
        )
        for i in range(0, len(packed), 40)
    ]


def content_matches(
    file: int | Path,
    file_hex: str,
    chunks: Sequence[ChunkRef] | None,
    sink: Callable[[memoryview], object] | None = None,
) -> bool:
    """Whether a file (an open fd, which it closes, or a path) holds what ``file_hex``
    names, read once through a reused buffer (each piece also handed to ``sink``).

    With ``chunks`` (schema 2), ``file_hex`` must be their identity, each chunk must
    hash to its digest and the file must end where they do; without (schema 1), the
    whole-file digest must be ``file_hex``.
    """
    expected = digest_of_hex(file_hex)
    if chunks is not None and file_identity((c.digest, c.size) for c in chunks) != expected:
        return False
    largest = max((c.size for c in chunks), default=1) if chunks is not None else 8 << 20
    buf = _buffers.take(_buffers.buffer_size(min(largest, MAX_CHUNK_RAW)))
    view = memoryview(buf)
    try:
        with open(file, "rb", buffering=0) as f:
            if chunks is None:
                hasher = Hasher()
                while n := f.readinto(view):
                    hasher.update(view[:n])
                    if sink is not None:
                        sink(view[:n])
                return hasher.digest() == expected
            for chunk in chunks:
                if chunk.size > len(view) or _read_exactly(f, view[: chunk.size]) != chunk.size:
                    return False
                if digest_bytes(view[: chunk.size]) != chunk.digest:
                    return False
                if sink is not None:
                    sink(view[: chunk.size])
            return f.readinto(view[:1]) == 0
    finally:
        _buffers.give(buf)


def _read_exactly(f: io.FileIO, view: memoryview) -> int:
    done = 0
    while done < len(view) and (n := f.readinto(view[done:])):
        done += n
    return done


@contextlib.contextmanager
def opened_cache(
    root: Path, sharing: SharingSetting = "auto", trusted: Iterable[int] = ()
) -> Iterator[NodeCache]:
    cache = NodeCache(root, sharing, trusted)
    try:
        yield cache
    finally:
        cache.close()
