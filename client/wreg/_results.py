"""What push and pull report (the CLI's ``--json`` prints these objects)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PushResult:
    reference: str
    manifest: str
    files: int
    bytes_total: int
    """Raw bytes of all files."""
    bytes_new: int
    """Raw bytes of the chunks the registry lacked."""
    bytes_sent: int
    """Encoded chunk bytes sent on the wire."""
    chunks_total: int
    chunks_new: int
    bytes_hashed: int = 0
    """Raw bytes read and hashed; files the stat cache knows unchanged are not read."""
    skipped: list[str] = field(default_factory=list)
    """Relative paths of symlinks not followed: they leave the directory or lead nowhere."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PullResult:
    reference: str
    manifest: str
    path: str
    """Where the model's files are: ``-o DIR``, or the cache snapshot."""
    files: int
    bytes_total: int
    bytes_downloaded: int
    """Encoded chunk bytes received on the wire."""
    bytes_from_cache: int
    """Raw bytes taken from the node cache instead of the network."""
    bytes_resumed: int = 0
    """Raw bytes an interrupted pull had already written and verified (kept, not fetched)."""
    chunks_downloaded: int = 0
    """Chunks received on the wire."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CachedSnapshot:
    """One model version held by the node cache (``wreg cache ls``)."""

    repository: str
    manifest: str
    tags: list[str]
    files: int
    bytes_total: int
    complete: bool
    """Every file's blob is present (a partial pull leaves a snapshot incomplete)."""
    last_used: float
    """Unix time of the last pull or offline use."""
    pinned: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CacheListing:
    path: str
    snapshots: list[CachedSnapshot]
    bytes_blobs: int
    """Bytes of all complete files in blobs/ (shared between snapshots, counted once)."""
    bytes_partial: int
    """Bytes of partial downloads in tmp/ (kept for resume)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WarmResult:
    reference: str
    ok: bool
    manifest: str | None = None
    bytes_downloaded: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PruneResult:
    removed: list[str]
    """``repository@manifest`` of every snapshot removed, least recently used first."""
    kept_in_use: list[str]
    kept_pinned: list[str]
    bytes_before: int
    bytes_after: int
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CorruptFile:
    """A model file whose cached blob failed ``cache verify``."""

    blob: str
    """The file's digest (the blob's name)."""
    repository: str
    manifest: str
    tags: list[str]
    """Tags of ``repository`` the node cache resolves to ``manifest``."""
    path: str
    """The file's path in the model."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    blobs_checked: int
    bytes_checked: int
    corrupt: list[str]
    """Digests of blobs whose content does not match their name."""
    corrupt_files: list[CorruptFile]
    """Every cached model file a corrupt blob belonged to."""
    incomplete: list[str]
    """``repository@manifest`` of snapshots missing a file (after repair, if asked)."""
    repaired: list[str]
    """``repository@manifest`` of snapshots pulled again by ``--repair``."""
    ok: bool
    """Nothing is wrong any more: no corrupt blob left, no snapshot incomplete."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
