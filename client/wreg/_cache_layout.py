"""The node cache layout: every path and lock name under ``$WREG_CACHE`` (default
``~/.cache/wreg``) is built here, and nowhere else::

    <root>/
    ├── blobs/
    │   └── <hex>                       complete files by file id, read-only
    ├── snapshots/
    │   └── <repo>/
    │       └── <hex>/<path>            a model's tree: relative symlinks to blobs
    ├── refs/
    │   └── <repo>/<tag>                last resolved manifest digest (offline mode)
    ├── manifests/
    │   └── <hex>.json                  manifests seen, by digest
    ├── index.sqlite                    chunk digest -> (blob, offset, length); blob stat
    │                                   at commit; snapshot last use and pins; the push
    │                                   stat cache
    ├── tmp/
    │   ├── <hex>.part                  a file being assembled, at its final size
    │   └── <hex>.progress              chunk indices of .part already written and verified
    └── locks/
        ├── file-<hex>.lock             held while one process assembles that file
        ├── snapshot-<hex>.lock         held while a pull works on that manifest ("in use")
        ├── warm.lock                   held by ``wreg cache warm``
        └── prune.lock                  held by ``wreg cache prune``

``<hex>`` is the hex part of a digest (``wreg.core.digest.hex_of``): of the file's digest
under ``blobs/``, ``tmp/`` and ``file-``; of the manifest's under ``snapshots/``,
``manifests/`` and ``snapshot-``. Files written in place of another (a ref, a manifest, a
snapshot link) are staged next to it as ``.<name>.<random>`` and renamed over it.

Functions here only build and parse names; they touch no file. ``wreg._cache`` does the
I/O (and says why the locks are what they are).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Final

from wreg.core.digest import HEX_PATTERN

_HEX: Final = re.compile(HEX_PATTERN)
_PART: Final = ".part"
_PROGRESS: Final = ".progress"
_LOCK: Final = ".lock"
_FILE_LOCK: Final = "file-"
_SNAPSHOT_LOCK: Final = "snapshot-"
SNAPSHOT_LOCK_GLOB: Final = f"{_SNAPSHOT_LOCK}*{_LOCK}"
"""Matches every snapshot lock's name under ``locks/`` (parse one with
``snapshot_lock_hex``)."""


def is_hex(name: str) -> bool:
    """Whether ``name`` is a digest's hex part, as blobs and snapshot directories are named."""
    return _HEX.fullmatch(name) is not None


def partial_hex(name: str) -> str | None:
    """The file hex of a name under ``tmp/`` (``<hex>.part``, ``<hex>.progress``), if any."""
    stem = name.split(".", 1)[0]
    return stem if is_hex(stem) else None


def snapshot_lock_hex(name: str) -> str | None:
    """The manifest hex of a name matching ``SNAPSHOT_LOCK_GLOB``, if it is one."""
    if not (name.startswith(_SNAPSHOT_LOCK) and name.endswith(_LOCK)):
        return None
    hex_digest = name[len(_SNAPSHOT_LOCK) : -len(_LOCK)]
    return hex_digest if is_hex(hex_digest) else None


def staging(path: Path) -> Path:
    """A fresh name next to ``path`` to write under before renaming over it."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")


class CacheLayout:
    """The paths of one node cache rooted at ``root`` (see the module docstring)."""

    __slots__ = (
        "blobs_dir",
        "index_db",
        "locks_dir",
        "manifests_dir",
        "refs_dir",
        "root",
        "snapshots_dir",
        "tmp_dir",
    )

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.snapshots_dir = root / "snapshots"
        self.refs_dir = root / "refs"
        self.manifests_dir = root / "manifests"
        self.tmp_dir = root / "tmp"
        self.locks_dir = root / "locks"
        self.index_db = root / "index.sqlite"

    @property
    def dirs(self) -> tuple[Path, ...]:
        """The directories every cache has (created when it is opened)."""
        return (
            self.blobs_dir,
            self.snapshots_dir,
            self.refs_dir,
            self.manifests_dir,
            self.tmp_dir,
            self.locks_dir,
        )

    # -- blobs and partial files -------------------------------------------------

    def blob(self, file_hex: str) -> Path:
        return self.blobs_dir / file_hex

    def part(self, file_hex: str) -> Path:
        """Where the file is assembled: deterministic, so a pull can resume it."""
        return self.tmp_dir / f"{file_hex}{_PART}"

    def progress(self, file_hex: str) -> Path:
        return self.tmp_dir / f"{file_hex}{_PROGRESS}"

    # -- manifests, refs and snapshots -------------------------------------------

    def manifest(self, manifest_hex: str) -> Path:
        return self.manifests_dir / f"{manifest_hex}.json"

    def ref(self, repo: str, tag: str) -> Path:
        return self.refs_dir / repo / tag

    def snapshot_repo(self, repo: str) -> Path:
        """The directory holding every snapshot of ``repo``."""
        return self.snapshots_dir / repo

    def snapshot(self, repo: str, manifest_hex: str) -> Path:
        return self.snapshot_repo(repo) / manifest_hex

    # -- locks -------------------------------------------------------------------

    def lock(self, name: str) -> Path:
        return self.locks_dir / f"{name}{_LOCK}"

    def file_lock(self, file_hex: str) -> Path:
        return self.lock(f"{_FILE_LOCK}{file_hex}")

    def snapshot_lock(self, manifest_hex: str) -> Path:
        return self.lock(f"{_SNAPSHOT_LOCK}{manifest_hex}")

    def warm_lock(self) -> Path:
        return self.lock("warm")

    def prune_lock(self) -> Path:
        return self.lock("prune")
