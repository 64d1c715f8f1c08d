"""What the templates show, computed from plain values: byte sizes for people, the file
table, a byte-level diff of two manifests, and the storage chart's bar widths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from wreg.core.manifest import Manifest
from wreg_server.domain.storage import Usage

_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(size: int) -> str:
    """``1536`` → ``1.5 KiB`` (binary units, three significant figures)."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_digest(digest: str) -> str:
    """``blake3:0123…`` → ``blake3:0123456789ab`` (enough to tell manifests apart)."""
    return digest[: len("blake3:") + 12]


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    size: int
    digest: str
    mode: str
    chunks: int


def files_of(manifest: Manifest) -> list[FileRow]:
    return [FileRow(f.path, f.size, f.digest, f"{f.mode:o}", len(f.chunks)) for f in manifest.files]


Status = Literal["added", "removed", "changed", "same"]


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    status: Status
    old_size: int | None
    new_size: int | None


@dataclass(frozen=True, slots=True)
class Diff:
    """``target`` against ``base``: files by path, and bytes by chunk, in the terms of
    ``wreg.core.diff``: ``bytes_shared`` are the raw bytes of ``target``'s distinct chunks
    that ``base`` also has, ``bytes_new`` those of the ones it lacks (what a push of
    ``target`` after ``base`` uploads). ``tensors``: ``wreg.core.diff.diff``'s answer
    when both manifests could be described, else None (files only)."""

    files: list[FileChange]
    bytes_total: int
    bytes_shared: int
    bytes_new: int
    tensors: dict[str, Any] | None = None

    def count(self, status: Status) -> int:
        return sum(1 for f in self.files if f.status == status)


def diff(base: Manifest, target: Manifest, tensors: dict[str, Any] | None = None) -> Diff:
    old = {f.path: f for f in base.files}
    new = {f.path: f for f in target.files}
    changes: list[FileChange] = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a is None:
            changes.append(FileChange(path, "added", None, b.size if b else None))
        elif b is None:
            changes.append(FileChange(path, "removed", a.size, None))
        else:
            status: Status = "same" if a.digest == b.digest else "changed"
            changes.append(FileChange(path, status, a.size, b.size))
    known = base.chunk_digests()
    sizes = {c.digest: c.size for f in target.files for c in f.chunks}
    shared = sum(size for digest, size in sizes.items() if digest in known)
    return Diff(changes, target.total_size, shared, sum(sizes.values()) - shared, tensors)


def changed_tensors(tensors: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """The changed tensors of every changed file (at most ``limit``), path added."""
    rows: list[dict[str, Any]] = []
    for changed in tensors["files"]["changed"]:
        for kind in ("added", "removed"):
            rows += [
                {"path": changed["path"], "name": n, "changes": [kind]}
                for n in changed["tensors"][kind]
            ]
        rows += [dict(t, path=changed["path"]) for t in changed["tensors"]["changed"]]
    return rows[:limit]


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    width: float  # percent of the chart's width
    css: str


@dataclass(frozen=True, slots=True)
class ChartRow:
    name: str
    bars: tuple[Bar, Bar, Bar]


def _pct(value: int, largest: int) -> float:
    return round(100 * value / largest, 2) if largest > 0 else 0.0


def chart(usages: list[Usage]) -> list[ChartRow]:
    """One row per repository: logical, unique and stored bytes, on one scale."""
    largest = max((u.logical_bytes for u in usages), default=0)
    return [
        ChartRow(
            u.name or "",
            (
                Bar("logical", u.logical_bytes, _pct(u.logical_bytes, largest), "logical"),
                Bar("unique", u.unique_bytes, _pct(u.unique_bytes, largest), "unique"),
                Bar("stored", u.stored_bytes, _pct(u.stored_bytes, largest), "stored"),
            ),
        )
        for u in usages
    ]
