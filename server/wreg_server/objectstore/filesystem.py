"""Filesystem object store: one file per key under a root directory.

``put`` writes to ``<root>/.tmp/<random>``, fsyncs, then ``os.replace``s onto the final
path, so readers see either no object or the whole object, never a prefix — the same
stage-then-move that keeps the node cache correct. ``.tmp`` lives under the root so the
rename never crosses filesystems; keys cannot start with a dot, so it never clashes.
Blocking calls run in worker threads to keep the event loop free (a batch of small
objects, ``put_many`` / ``exists_many``, in a few threads rather than a hop each). Any
``OSError`` but a missing file (a full or read-only disk, permissions, a lost mount) is
a failure of the backend: ``base.py`` raises it as ``BackendError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from anyio import to_thread

from wreg_server.objectstore.base import ObjectNotFound, ObjectStore, check_key

_STAGING: Final = ".tmp"
# Worker threads of one ``put_many``: fsyncs wait on the disk, so several overlap.
_PUT_THREADS: Final = 8


class FilesystemStore(ObjectStore):
    """Objects as files under ``root``; keys map to relative paths one-to-one."""

    name = "file"
    failures = (OSError,)

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._staging = self.root / _STAGING

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def local_path(self, key: str) -> Path | None:
        return self._path(check_key(key))

    async def _put(self, key: str, data: bytes) -> None:
        await to_thread.run_sync(self._put_sync, key, data)

    def _put_sync(self, key: str, data: bytes) -> None:
        """Write, fsync and rename one object (``_put_group_sync``), then fsync its
        directory."""
        for parent in self._put_group_sync([(key, data)]):
            if self.fsync:
                _fsync_dir(parent)

    async def _put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Puts in ``_PUT_THREADS`` worker threads rather than a thread hop each; every
        file is still written, fsynced and renamed alone, and each directory holding one
        is fsynced once, after all the renames into it."""
        groups = [items[i::_PUT_THREADS] for i in range(min(_PUT_THREADS, len(items)))]
        touched = await asyncio.gather(
            *(to_thread.run_sync(self._put_group_sync, group) for group in groups)
        )
        if self.fsync:
            parents = set().union(*touched)
            await to_thread.run_sync(_fsync_dirs, sorted(parents))

    def _put_group_sync(self, items: list[tuple[str, bytes]]) -> set[Path]:
        self._staging.mkdir(parents=True, exist_ok=True)
        parents: set[Path] = set()
        for key, data in items:
            final = self._path(key)
            temp = self._staging / uuid.uuid4().hex
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.replace(temp, final)
                except FileNotFoundError:  # the first object under this prefix
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                raise
            parents.add(final.parent)
        return parents

    async def _exists_many(self, keys: list[str]) -> list[bool]:
        paths = [str(self._path(key)) for key in keys]
        return await to_thread.run_sync(lambda: [os.path.isfile(p) for p in paths])

    async def _get(self, key: str) -> bytes:
        return await to_thread.run_sync(self._get_sync, key)

    def _get_sync(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    async def _exists(self, key: str) -> bool:
        return await to_thread.run_sync(self._path(key).is_file)

    async def _size(self, key: str) -> int:
        return await to_thread.run_sync(self._size_sync, key)

    def _size_sync(self, key: str) -> int:
        path = self._path(key)
        try:
            if not path.is_file():
                raise FileNotFoundError(path)
            return path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    async def _delete(self, key: str) -> None:
        await to_thread.run_sync(self._delete_sync, key)

    def _delete_sync(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(key).unlink()

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        # Walk only the directory the prefix pins down, then filter by the string prefix.
        base = prefix.rpartition("/")[0]
        keys = await to_thread.run_sync(self._list_sync, base, prefix)
        for key in keys:
            yield key

    def _list_sync(self, base: str, prefix: str) -> list[str]:
        start = self._path(base) if base else self.root
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                if filename.startswith("."):
                    continue
                key = filename if rel == "." else f"{rel}/{filename}"
                if key.startswith(prefix):
                    found.append(key)
        found.sort()
        return found


def _fsync_dirs(paths: list[Path]) -> None:
    for path in paths:
        _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
