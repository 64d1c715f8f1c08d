"""The node cache under ``$WREG_CACHE`` (default ``~/.cache/wreg``)::

    blobs/<hex>                     complete files by whole-file digest, read-only
    snapshots/<repo>/<hex>/<path>   a model's tree: relative symlinks to blobs
    refs/<repo>/<tag>               last resolved manifest digest (offline mode)
    manifests/<hex>.json            manifests seen, by digest
    index.sqlite                    chunk digest -> (blob, offset, length)
    tmp/                            partial downloads

A file only ever appears under ``blobs/`` by an atomic rename after its whole-file
digest has been checked, so a reader never sees half a file, whatever was killed when.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from wreg.core.digest import hex_of
from wreg.core.manifest import FileEntry, Manifest


class NodeCache:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        for sub in ("blobs", "snapshots", "refs", "manifests", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.sqlite", timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks (digest TEXT PRIMARY KEY, blob TEXT NOT NULL,"
            " offset INTEGER NOT NULL, length INTEGER NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / hex_of(digest)

    def has_blob(self, entry: FileEntry) -> bool:
        try:
            return self.blob_path(entry.digest).stat().st_size == entry.size
        except FileNotFoundError:
            return False

    def temp_path(self, digest: str) -> Path:
        """A fresh name under tmp/ (unique, so concurrent pulls never share one)."""
        return self.root / "tmp" / f"{hex_of(digest)}.{uuid.uuid4().hex[:12]}.part"

    def commit_blob(self, temp: Path, entry: FileEntry) -> Path:
        """Make a verified temp file the blob for ``entry`` and index its chunks."""
        final = self.blob_path(entry.digest)
        os.chmod(temp, 0o444)
        os.replace(temp, final)
        self.index_chunks(entry)
        return final

    def index_chunks(self, entry: FileEntry) -> None:
        rows = [(c.digest, hex_of(entry.digest), off, c.size) for off, c in entry.chunk_offsets()]
        self._db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)", rows)

    def locate_chunks(self, digests: Iterable[str]) -> dict[str, tuple[Path, int, int]]:
        """Chunks some cached blob already holds: digest -> (blob path, offset, length)."""
        found: dict[str, tuple[Path, int, int]] = {}
        wanted = list(digests)
        for i in range(0, len(wanted), 500):
            batch = wanted[i : i + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT digest, blob, offset, length FROM chunks WHERE digest IN ({marks})"
            for digest, blob, offset, length in self._db.execute(query, batch):
                path = self.root / "blobs" / blob
                if path.exists():
                    found[digest] = (path, offset, length)
        return found

    # -- manifests, refs and snapshots -------------------------------------------

    def save_manifest(self, digest: str, body: bytes) -> None:
        path = self.root / "manifests" / f"{hex_of(digest)}.json"
        if not path.exists():
            _atomic_write(path, body)

    def write_ref(self, name: str, tag: str, digest: str) -> None:
        path = self.root / "refs" / name / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, digest.encode())

    def snapshot_dir(self, name: str, manifest_digest: str) -> Path:
        return self.root / "snapshots" / name / hex_of(manifest_digest)

    def build_snapshot(self, name: str, manifest: Manifest) -> Path:
        """The model's tree as relative symlinks to blobs, created atomically."""
        final = self.snapshot_dir(name, manifest.digest)
        if final.exists():
            return final
        staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        for entry in manifest.files:
            link = staging / entry.path
            link.parent.mkdir(parents=True, exist_ok=True)
            target = os.path.relpath(self.blob_path(entry.digest), final / Path(entry.path).parent)
            link.symlink_to(target)
        try:
            staging.rename(final)
        except OSError:  # another process won the race with an identical tree
            shutil.rmtree(staging)
        return final


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def opened_cache(root: Path) -> Iterator[NodeCache]:
    cache = NodeCache(root)
    try:
        yield cache
    finally:
        cache.close()
