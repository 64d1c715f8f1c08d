"""Stage 2, plan: what each chunk of the files to assemble needs. Pure: plain data in
(the files, what the node cache already has), plain data out, no I/O.

For every file: the chunks an interrupted pull already wrote and verified (resumed: kept,
re-checked at commit). For every other chunk, by digest and in manifest order: every
place it goes (each distinct chunk is written once per place, obtained once per pull),
and where it comes from: a cached blob that holds it (seeded, preferred) or the registry
(fetched). A seed that fails at run time (the blob went away) is fetched instead.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from wreg._cache import ChunkLocation
from wreg.core.manifest import FileEntry


class Place(NamedTuple):
    """Where a chunk goes: the file (its position in ``Plan.files``), the offset in it, and
    the chunk's index in the file."""

    file: int
    offset: int
    chunk_index: int


@dataclass(frozen=True, slots=True)
class FilePlan:
    """One file to assemble."""

    entry: FileEntry
    resumed: frozenset[int]  # chunk indices kept from an interrupted pull
    to_write: int  # chunks still to write: seeded or fetched

    @property
    def complete(self) -> bool:
        """Nothing left to write (every chunk resumed, or no chunks): commit at once."""
        return self.to_write == 0

    @property
    def resumed_bytes(self) -> int:
        return sum(c.size for i, c in enumerate(self.entry.chunks) if i in self.resumed)


@dataclass(frozen=True, slots=True)
class Plan:
    files: tuple[FilePlan, ...]
    # chunk digest -> every place it is written to (manifest order, first use)
    places: dict[str, list[Place]]
    sizes: dict[str, int]  # chunk digest -> raw size
    seeds: dict[str, ChunkLocation]  # the chunks of ``places`` copied from a cached blob

    @property
    def fetches(self) -> list[str]:
        """The chunks downloaded from the registry, in manifest order."""
        return [d for d in self.places if d not in self.seeds]

    @property
    def complete(self) -> list[int]:
        """Positions of the files with nothing left to write."""
        return [i for i, f in enumerate(self.files) if f.complete]

    @property
    def resumed_bytes(self) -> int:
        return sum(f.resumed_bytes for f in self.files)


def missing(files: Iterable[FileEntry], blobs: Collection[str]) -> list[FileEntry]:
    """The distinct files (by digest, first one kept, manifest order) not among ``blobs``
    (the file digests the node cache holds)."""
    todo: dict[str, FileEntry] = {}
    for e in files:
        if e.digest not in blobs:
            todo.setdefault(e.digest, e)
    return list(todo.values())


def _resumed(entry: FileEntry, progress: Mapping[str, Collection[int]]) -> frozenset[int]:
    return frozenset(i for i in progress.get(entry.digest, ()) if 0 <= i < len(entry.chunks))


def _skipped(
    entry: FileEntry,
    progress: Mapping[str, Collection[int]],
    only: Mapping[str, Collection[int]] | None,
) -> Collection[int]:
    """Chunk indices of ``entry`` not to plan: resumed, or outside ``only``."""
    resumed = _resumed(entry, progress)
    if only is None:
        return resumed
    chosen = only.get(entry.digest, ())
    return resumed | frozenset(i for i in range(len(entry.chunks)) if i not in chosen)


def pending_chunks(
    files: Sequence[FileEntry],
    progress: Mapping[str, Collection[int]] | None = None,
    only: Mapping[str, Collection[int]] | None = None,
) -> list[str]:
    """The distinct chunks of ``files`` not resumed (and in ``only``, when given): those
    to look up in the cache."""
    progress = progress or {}
    wanted: dict[str, None] = {}
    for e in files:
        skipped = _skipped(e, progress, only)
        for index, chunk in enumerate(e.chunks):
            if index not in skipped:
                wanted.setdefault(chunk.digest)
    return list(wanted)


def plan(
    files: Sequence[FileEntry],
    progress: Mapping[str, Collection[int]] | None = None,
    located: Mapping[str, ChunkLocation] | None = None,
    only: Mapping[str, Collection[int]] | None = None,
) -> Plan:
    """The plan for assembling ``files`` (distinct by digest; a repeated one is planned
    once), given ``progress`` (file digest -> chunk indices an interrupted pull recorded
    as written and verified; out-of-range indices are ignored) and ``located`` (chunk
    digest -> a cached blob holding it). With ``only`` (file digest -> chunk indices), a
    partial plan: just those chunks of each file (a selective load); a file ``only``
    does not name gets none."""
    progress = progress or {}
    located = located or {}
    seen: set[str] = set()
    planned: list[FilePlan] = []
    places: dict[str, list[Place]] = {}
    sizes: dict[str, int] = {}
    for entry in files:
        if entry.digest in seen:
            continue
        seen.add(entry.digest)
        resumed = _resumed(entry, progress)
        skipped = _skipped(entry, progress, only)
        position = len(planned)
        to_write = 0
        for index, (offset, chunk) in enumerate(entry.chunk_offsets()):
            if index in skipped:
                continue
            places.setdefault(chunk.digest, []).append(Place(position, offset, index))
            sizes[chunk.digest] = chunk.size
            to_write += 1
        planned.append(FilePlan(entry, resumed, to_write))
    seeds = {d: located[d] for d in places if d in located}
    return Plan(tuple(planned), places, sizes, seeds)
