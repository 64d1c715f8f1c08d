"""Plain values the domain returns (never ORM objects, which must not outlive a session)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    digest: str
    size: int
    stored_size: int


@dataclass(frozen=True, slots=True)
class TagInfo:
    name: str
    tag: str
    digest: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ManifestBody:
    name: str
    digest: str
    body: bytes
    created_at: datetime | None = None
    pushed_by: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    name: str
    tags: tuple[str, ...]
    updated_at: datetime
