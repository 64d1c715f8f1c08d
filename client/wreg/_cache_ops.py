"""Operations on the node cache as a whole: resolve a reference offline, write a pull's
``-o DIR`` from cached blobs (hardlink, copy, reflink or symlink; an untrusted blob is
always copied and hashed), and the maintenance of ``wreg cache ...`` (list, prune, pin,
verify, which names the model files of a bad blob).

A snapshot is **in use** while a pull of it runs (it holds ``locks/snapshot-<hex>.lock``)
or while a process this user can see (``/proc``; all of them as root) has one of its
files open or memory-mapped — by inode, so hardlinked ``-o`` copies count too. Prune
never removes a snapshot in use or pinned; it removes partial downloads nobody is
working on, then blobs no snapshot references, then least recently used snapshots,
until the cache fits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

from wreg._cache import NodeCache, content_matches
from wreg._cache_layout import SNAPSHOT_LOCK_GLOB, is_hex, partial_hex, snapshot_lock_hex
from wreg._results import CachedSnapshot, CacheListing, CorruptFile, PruneResult, VerifyResult
from wreg.core.digest import digest_of_hex, hex_of
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.core.reference import Reference

if TYPE_CHECKING:
    from filelock import SoftFileLease

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """``500M``, ``1.5GiB``, ``2TB``, ``1000`` → bytes (k/M/G/T are decimal, KiB... binary)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ErrorCode.SIZE_INVALID.error(
            f"invalid size {text!r}: expected e.g. 500M, 20G, 1.5TiB"
        )
    return int(float(m.group(1)) * _UNITS[unit])


def resolve_offline(cache: NodeCache, ref: Reference) -> Manifest:
    """The manifest ``ref`` names according to the node cache alone (``refs/``)."""
    digest = ref.digest
    if digest is None:
        assert ref.tag is not None  # noqa: S101 - narrows: a reference has a digest or a tag
        digest = cache.read_ref(ref.name, ref.tag)
        if digest is None:
            ref_path = cache.layout.ref(ref.name, ref.tag).relative_to(cache.root).as_posix()
            raise ErrorCode.NOT_CACHED.error(
                f"offline: {ref} is not in the node cache (no {ref_path}); "
                "pull it once while online",
            )
    manifest = cache.load_manifest(digest)
    if manifest is None:
        raise ErrorCode.NOT_CACHED.error(
            f"offline: manifest {digest} of {ref} is not in the node cache; "
            "pull it once while online",
        )
    return manifest


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Dirs:
    """Directory fds under ``dest``, each opened relative to its parent with
    ``O_NOFOLLOW``: a symlink planted in any component is refused, never followed."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._fds: dict[tuple[str, ...], int] = {(): os.open(dest, os.O_RDONLY | os.O_DIRECTORY)}

    def get(self, parts: tuple[str, ...], create: bool) -> int | None:
        """The fd of ``dest/parts``; ``None`` if it is missing and not ``create``."""
        if parts in self._fds:
            return self._fds[parts]
        parent = self.get(parts[:-1], create)
        if parent is None:
            return None
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError:  # ELOOP: a symlink; ENOTDIR: a file
            raise _unsafe(self.dest, parts, parent) from None
        if len(self._fds) > 256:  # bound open fds on wide trees; reopened on demand
            self.close(keep_root=True)
        self._fds[parts] = fd
        return fd

    def close(self, keep_root: bool = False) -> None:
        for parts, fd in list(self._fds.items()):
            if parts or not keep_root:
                os.close(fd)
                del self._fds[parts]


def _unsafe(dest: Path, parts: tuple[str, ...], parent: int) -> WregError:
    where = dest.joinpath(*parts)
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
    except OSError:
        what = "not a directory"
    return ErrorCode.LOCAL_PATH_UNSAFE.error(
        f"refusing to write under {where}: it is {what} (wreg never writes through links in -o DIR)"
    )


LinkMode = Literal["hardlink", "copy", "reflink", "symlink"]
LINK_MODES: Final[tuple[str, ...]] = get_args(LinkMode)
_FICLONE: Final = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def _chunks_of(entry: FileEntry) -> tuple[ChunkRef, ...] | None:
    return entry.chunks if entry.built_from_chunks else None


def _same_content(name: str, fd: int, entry: FileEntry) -> bool:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    return content_matches(src, hex_of(entry.digest), _chunks_of(entry))


def _needs_write(
    cache: NodeCache, dirs: Dirs, entry: FileEntry, force: bool, link: LinkMode = "hardlink"
) -> bool:
    """Whether ``entry`` must be written; raises if something other than its content is
    in the way (a symlink, a directory, or, without ``force``, a different file)."""
    parts = tuple(entry.path.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise ErrorCode.LOCAL_PATH_UNSAFE.error(
            f"refusing to write {entry.path!r}: not a plain path"
        )
    fd = dirs.get(parts[:-1], create=False)
    if fd is None:
        return True
    try:
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    final = dirs.dest / entry.path
    if stat.S_ISLNK(st.st_mode) and link == "symlink":
        with contextlib.suppress(OSError):
            if os.readlink(parts[-1], dir_fd=fd) == str(cache.blob_path(entry.digest)):
                return False
    if stat.S_ISLNK(st.st_mode) and not force:
        raise ErrorCode.LOCAL_PATH_UNSAFE.error(
            f"refusing to write {final}: it is a symlink (--force replaces the link itself)"
        )
    if stat.S_ISDIR(st.st_mode):
        raise ErrorCode.LOCAL_FILE_EXISTS.error(f"cannot write {final}: a directory is in the way")
    if stat.S_ISREG(st.st_mode):
        blob = cache.blob_path(entry.digest).stat()
        if (st.st_dev, st.st_ino) == (blob.st_dev, blob.st_ino):
            return False
        if st.st_size == entry.size and _same_content(parts[-1], fd, entry):
            return False
    if not force:
        raise ErrorCode.LOCAL_FILE_EXISTS.error(
            f"refusing to overwrite {final}: it holds other content (--force overwrites it)"
        )
    return True


def materialize(
    cache: NodeCache,
    files: Manifest | Iterable[FileEntry],
    dest: Path,
    *,
    force: bool = False,
    link: LinkMode = "hardlink",
) -> None:
    """Put the files under ``dest`` as ``link`` says: ``hardlink`` (the default; a copy
    across filesystems), ``copy``, ``reflink`` (a copy-on-write clone where the
    filesystem can, else a copy) or ``symlink`` (an absolute link to the blob).

    A hardlink shares the blob's inode: a write into it (by root, or after ``chmod
    u+w``) writes into the cache, which notices (the blob's stat changed) and re-hashes
    before using it again. A blob that is not trusted (``NodeCache.blob_trusted``:
    another user's, say) is never linked: it is copied and hashed as it is copied.
    Each link this makes, and each link to a blob it removes (``force`` replacing a
    hardlinked file of another version), is recorded (``NodeCache.note_link``): the
    link count moved the blob's ctime, which would otherwise cost a re-hash next time.

    Nothing is written outside ``dest``: each directory below it is opened relative to
    its parent with ``O_NOFOLLOW`` and each file is created and renamed relative to its
    directory's fd, so a symlink planted in any component is refused, never followed
    (``LOCAL_PATH_UNSAFE``). A file already there with the same content (the cached
    blob's inode, or the same size and digest) is left alone; a different one is refused
    before anything is written (``LOCAL_FILE_EXISTS``) unless ``force``, which replaces
    it (the directory entry, never the target of a link). Each file is staged under a
    temporary name and renamed, so ``dest`` never holds a partial file under a final name.
    """
    entries = files.files if isinstance(files, Manifest) else files
    if dest.exists() and not dest.is_dir():
        raise ErrorCode.LOCAL_PATH_MISSING.error(f"cannot write to {dest}: not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    dirs = Dirs(dest)
    try:
        todo = [e for e in entries if _needs_write(cache, dirs, e, force, link)]
        for entry in todo:
            parts = tuple(entry.path.split("/"))
            fd = dirs.get(parts[:-1], create=True)
            assert fd is not None  # noqa: S101 - narrows: create=True opens or raises
            file_hex = hex_of(entry.digest)
            st = cache.blob_stat(file_hex)
            trusted = st is not None and cache.blob_trusted(file_hex, st)
            _place(cache, file_hex, st, fd, parts[-1], entry, link if trusted else None)
    finally:
        dirs.close()


def _place(
    cache: NodeCache,
    file_hex: str,
    st: os.stat_result | None,
    fd: int,
    name: str,
    entry: FileEntry,
    link: LinkMode | None,
) -> None:
    """Write ``name`` (under ``fd``) from ``blobs/<file_hex>`` (whose ``lstat`` was
    ``st``) by ``link``; ``None``: an untrusted blob, copied and hashed as it is copied.
    A hard link made, or one to another blob replaced, is recorded (``note_link``)."""
    blob = cache.layout.blob(file_hex)
    staging = f".{name}.wreg-{uuid.uuid4().hex[:8]}"
    linked = False
    try:
        if link == "symlink":
            os.symlink(blob, staging, dir_fd=fd)
        elif link == "hardlink" and _hardlink(blob, fd, staging, entry):
            linked = True
        else:
            _copy(blob, fd, staging, entry, reflink=link == "reflink", check=link is None)
        replaced = _linked_blob(cache, fd, name)
        os.rename(staging, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:  # e.g. a full disk mid-copy: leave no staging file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging, dir_fd=fd)
        raise
    if linked and st is not None:
        cache.note_link(file_hex, st, 1)
    if replaced is not None:
        cache.note_link(*replaced, -1)


def _linked_blob(cache: NodeCache, fd: int, name: str) -> tuple[str, os.stat_result] | None:
    """The blob that the file at ``name`` (under ``fd``) about to be replaced is a hard
    link of, if any, with the blob's ``lstat``."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return cache.linked_blob(st)


def _hardlink(blob: Path, fd: int, staging: str, entry: FileEntry) -> bool:
    """Link the blob in, unless it lacks the manifest's exec bit (never chmod the
    blob: it is shared) or lives on another filesystem."""
    if entry.mode & 0o111 and not blob.lstat().st_mode & 0o100:
        return False
    try:
        os.link(blob, staging, dst_dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _copy(blob: Path, fd: int, staging: str, entry: FileEntry, reflink: bool, check: bool) -> None:
    """Copy the blob into a new file only we created: cloned (``FICLONE``) if
    ``reflink`` and the filesystem can, copied in the kernel otherwise, or, with
    ``check``, read and hashed on the way and refused unless it is the manifest's."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(staging, flags, 0o644, dir_fd=fd)
    try:
        src = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if check:
                _copy_hashed(src, out, entry)
            elif not (reflink and _clone(src, out)):
                _kernel_copy(src, out)
        finally:
            os.close(src)
        os.fchmod(out, 0o755 if entry.mode & 0o111 else 0o644)
    finally:
        os.close(out)


def _clone(src: int, out: int) -> bool:
    try:
        fcntl.ioctl(out, _FICLONE, src)
    except OSError:  # EOPNOTSUPP, EXDEV, EINVAL: no reflinks here
        return False
    return True


def _kernel_copy(src: int, out: int) -> None:
    size, done = os.fstat(src).st_size, 0
    try:
        while done < size:
            n = os.copy_file_range(src, out, size - done, done, done)
            if n == 0:
                break
            done += n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(src, done, os.SEEK_SET)
    os.lseek(out, done, os.SEEK_SET)
    with open(src, "rb", closefd=False) as r, open(out, "wb", closefd=False) as w:
        shutil.copyfileobj(r, w, 1 << 20)


def _copy_hashed(src: int, out: int, entry: FileEntry) -> None:
    with open(out, "wb", closefd=False) as w:
        ok = content_matches(os.dup(src), hex_of(entry.digest), _chunks_of(entry), w.write)
    if not ok:
        raise ErrorCode.CACHE_UNTRUSTED.error(
            f"{entry.path}: the cached blob changed while it was copied; pull again",
            detail={"path": entry.path, "expected": entry.digest},
        )


def _known_snapshots(cache: NodeCache) -> list[tuple[str, str]]:
    return sorted(set(cache.snapshots()))


def _blobs(cache: NodeCache) -> dict[str, os.stat_result]:
    found = {}
    with os.scandir(cache.layout.blobs_dir) as it:
        for e in it:
            if is_hex(e.name):
                with contextlib.suppress(FileNotFoundError):
                    found[e.name] = e.stat(follow_symlinks=False)
    return found


def _partials(cache: NodeCache) -> dict[str, int]:
    """file hex -> bytes of its .part and .progress."""
    sizes: dict[str, int] = {}
    with os.scandir(cache.layout.tmp_dir) as it:
        for e in it:
            stem = partial_hex(e.name)
            if stem is not None:
                with contextlib.suppress(FileNotFoundError):
                    sizes[stem] = sizes.get(stem, 0) + e.stat().st_size
    return sizes


def _manifest(cache: NodeCache, digest: str) -> Manifest | None:
    """The cached manifest, or ``None`` if it is missing or refused (maintenance skips
    what it cannot trust rather than failing)."""
    with contextlib.suppress(WregError):
        return cache.load_manifest(digest)
    return None


def _files(manifest: Manifest | None) -> tuple[FileEntry, ...]:
    return manifest.files if manifest is not None else ()


def listing(cache: NodeCache) -> CacheListing:
    info = cache.snapshot_info()
    tags: dict[tuple[str, str], list[str]] = {}
    for repo, tag, digest in cache.refs():
        tags.setdefault((repo, digest), []).append(tag)
    snapshots = []
    for repo, digest in _known_snapshots(cache):
        manifest = _manifest(cache, digest)
        files = manifest.files if manifest else ()
        last_used, pinned = info.get((repo, digest), (0.0, False))
        if not last_used:
            with contextlib.suppress(OSError):
                last_used = cache.snapshot_dir(repo, digest).stat().st_mtime
        snapshots.append(
            CachedSnapshot(
                repository=repo,
                manifest=digest,
                tags=sorted(tags.get((repo, digest), [])),
                files=len(files),
                bytes_total=sum(e.size for e in files),
                complete=manifest is not None and all(cache.blob_present(e) for e in files),
                last_used=last_used,
                pinned=pinned,
            )
        )
    snapshots.sort(key=lambda s: s.last_used, reverse=True)
    return CacheListing(
        path=str(cache.root),
        snapshots=snapshots,
        bytes_blobs=sum(st.st_size for st in _blobs(cache).values()),
        bytes_partial=sum(_partials(cache).values()),
    )


def set_pin(cache: NodeCache, ref: Reference, pinned: bool) -> str:
    """Pin (or unpin) the snapshot ``ref`` names in the cache; returns its manifest digest."""
    manifest = resolve_offline(cache, ref)
    if not cache.snapshot_dir(ref.name, manifest.digest).exists():
        raise ErrorCode.NOT_CACHED.error(
            f"{ref} ({manifest.digest}) is not in the node cache; pull it first",
        )
    cache.set_pinned(ref.name, manifest.digest, pinned)
    return manifest.digest


def open_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every file some visible process has open or mapped."""
    found: set[tuple[int, int]] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    found.add((st.st_dev, st.st_ino))
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) >= 6 and parts[4] != "0":
                    major, minor = (int(x, 16) for x in parts[3].split(":"))
                    found.add((os.makedev(major, minor), int(parts[4])))
    return found


@contextlib.contextmanager
def _held(locks: list[SoftFileLease]) -> Iterator[None]:
    try:
        yield
    finally:
        for lock in locks:
            with contextlib.suppress(Exception):
                lock.release()


def _try(lock: SoftFileLease) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    return True


def prune(cache: NodeCache, max_size: int, dry_run: bool = False) -> PruneResult:
    """Shrink the cache to ``max_size`` bytes (blobs + partial downloads), never touching
    a snapshot in use or pinned."""
    prune_lock = cache.prune_lock()
    prune_lock.acquire()
    held: list[SoftFileLease] = [prune_lock]
    with _held(held):
        blobs = _blobs(cache)
        partials = _partials(cache)
        size_before = sum(st.st_size for st in blobs.values()) + sum(partials.values())
        size = size_before
        info = cache.snapshot_info()
        opened = open_inodes()
        manifests: dict[str, Manifest | None] = {}

        def manifest_of(digest: str) -> Manifest | None:
            if digest not in manifests:
                manifests[digest] = _manifest(cache, digest)
            return manifests[digest]

        snapshots = _known_snapshots(cache)
        # Pulls in flight hold their manifest's lock, with or without a snapshot dir yet.
        busy_manifests: set[str] = set()
        for lock_file in cache.layout.locks_dir.glob(SNAPSHOT_LOCK_GLOB):
            hex_digest = snapshot_lock_hex(lock_file.name)
            if hex_digest is not None:
                lock = cache.lease(cache.layout.snapshot_lock(hex_digest))
                if _try(lock):
                    held.append(lock)
                else:
                    busy_manifests.add(digest_of_hex(hex_digest))
        in_use, pinned, candidates = [], [], []
        for repo, digest in snapshots:
            manifest = manifest_of(digest)
            files = manifest.files if manifest else ()
            is_open = any(
                (blobs[h].st_dev, blobs[h].st_ino) in opened
                for h in (hex_of(e.digest) for e in files)
                if h in blobs
            )
            if digest in busy_manifests or is_open:
                in_use.append((repo, digest))
            elif info.get((repo, digest), (0.0, False))[1]:
                pinned.append((repo, digest))
            else:
                candidates.append((repo, digest))
        refcount: dict[str, int] = {}
        for digest in {d for _, d in snapshots} | busy_manifests:
            manifest = manifest_of(digest)
            for h in {hex_of(e.digest) for e in manifest.files} if manifest else ():
                refcount[h] = refcount.get(h, 0) + 1

        def drop_blob(h: str) -> None:
            nonlocal size
            st = blobs.pop(h, None)
            if st is None or (st.st_dev, st.st_ino) in opened:
                return
            size -= st.st_size
            if not dry_run:
                cache.remove_blob(h)

        # 1. partial downloads nobody is working on (their file lock is free)
        for h, nbytes in partials.items():
            if size <= max_size:
                break
            lock = cache.lease(cache.layout.file_lock(h))
            if _try(lock):
                held.append(lock)
                size -= nbytes
                if not dry_run:
                    for path in (cache.layout.part(h), cache.layout.progress(h)):
                        path.unlink(missing_ok=True)
        # 2. blobs no snapshot references (least recently modified first)
        for h in sorted(
            (h for h in blobs if refcount.get(h, 0) == 0), key=lambda h: blobs[h].st_mtime
        ):
            if size <= max_size:
                break
            drop_blob(h)
        # 3. snapshots, least recently used first
        candidates.sort(key=lambda s: info.get(s, (0.0, False))[0])
        removed = []
        for repo, digest in candidates:
            if size <= max_size:
                break
            removed.append(f"{repo}@{digest}")
            manifest = manifest_of(digest)
            if not dry_run:
                cache.forget_snapshot(repo, digest)
                for ref_repo, tag, target in list(cache.refs()):
                    if ref_repo == repo and target == digest:
                        cache.remove_ref(repo, tag)
            for h in {hex_of(e.digest) for e in manifest.files} if manifest else ():
                refcount[h] -= 1
                if refcount[h] == 0:
                    drop_blob(h)
    return PruneResult(
        removed=removed,
        kept_in_use=[f"{r}@{d}" for r, d in in_use],
        kept_pinned=[f"{r}@{d}" for r, d in pinned],
        bytes_before=size_before,
        bytes_after=size,
        dry_run=dry_run,
    )


def verify(
    cache: NodeCache,
    repair: Callable[[str, str], None] | None = None,
) -> VerifyResult:
    """Re-hash every blob against its name, name the model files a bad one belongs to,
    and find snapshots whose files are missing or corrupt. Corrupt blobs are removed
    (gone, the next pull fetches them again; one another user owns in a group cache
    stays, and a pull refuses it). A good blob's stat is recorded again, so a pull uses
    it unread. With ``repair(repository, manifest_digest)`` (a pull by digest), the
    affected snapshots are pulled again at once."""
    blobs = _blobs(cache)
    corrupt = [h for h in sorted(blobs) if not cache.rehash_blob(h)]
    snapshots = _known_snapshots(cache)
    manifests = {d: _manifest(cache, d) for d in {d for _, d in snapshots}}
    tags: dict[tuple[str, str], list[str]] = {}
    for repo, tag, target in cache.refs():
        tags.setdefault((repo, target), []).append(tag)
    bad = set(corrupt)
    corrupt_files = [
        CorruptFile(
            blob=e.digest,
            repository=repo,
            manifest=digest,
            tags=sorted(tags.get((repo, digest), [])),
            path=e.path,
        )
        for repo, digest in snapshots
        for e in _files(manifests[digest])
        if hex_of(e.digest) in bad
    ]
    for h in corrupt:
        cache.remove_blob(h)

    def damaged(bad: set[str]) -> list[tuple[str, str]]:
        out = []
        for repo, digest in snapshots:
            manifest = manifests[digest]
            if manifest is None:
                continue
            root = cache.snapshot_dir(repo, digest)
            linked = [e for e in manifest.files if os.path.lexists(root / e.path)]
            if any(hex_of(e.digest) in bad or not cache.blob_present(e) for e in linked):
                out.append((repo, digest))
        return out

    broken = damaged(bad)
    repaired: list[str] = []
    if repair is not None:
        for repo, digest in broken:
            with contextlib.suppress(WregError, OSError):
                repair(repo, digest)
                repaired.append(f"{repo}@{digest}")
        broken = damaged(set())
    return VerifyResult(
        blobs_checked=len(blobs),
        bytes_checked=sum(st.st_size for st in blobs.values()),
        corrupt=[digest_of_hex(h) for h in corrupt],
        corrupt_files=corrupt_files,
        incomplete=[f"{r}@{d}" for r, d in broken],
        repaired=repaired,
        ok=not broken and (repair is not None or not corrupt),
    )
