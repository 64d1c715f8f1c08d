"""Stage 3, assembly: the files being assembled under ``tmp/`` (``Target``), their
descriptors, and their progress records.

A file is assembled in ``tmp/<hex>.part`` (its name follows from its digest) next to
``tmp/<hex>.progress``, an append-only list of the chunk indices already written and
verified. The record is appended every ``FLUSH_SECONDS`` and fsynced (after an
``fdatasync`` of the data) every ``SYNC_SECONDS``; should a crash still leave a recorded
chunk unwritten, the check at commit catches it and the chunk is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from wreg._cache import NodeCache, share_file
from wreg._progress import Progress
from wreg.core.manifest import FileEntry

if TYPE_CHECKING:
    from filelock import SoftFileLease

    from wreg._http import Registry

FLUSH_SECONDS: Final = 0.5
SYNC_SECONDS: Final = 5.0


@dataclass(slots=True)
class Stats:
    received: int = 0  # encoded bytes on the wire
    chunks: int = 0  # chunks downloaded
    fetched_raw: int = 0  # raw bytes written from downloaded chunks (every placement)
    resumed: int = 0  # raw bytes found written and verified by an interrupted pull


@dataclass(slots=True)
class Context:
    """What every stage of one pull shares."""

    registry: Registry
    name: str  # the repository chunks are fetched through
    cache: NodeCache
    executor: Executor  # for blocking file work (seeding, checks, syncs)
    progress: Progress
    concurrency: int
    inflight_bytes: int
    stats: Stats = field(default_factory=Stats)


@dataclass(slots=True, eq=False)
class Target:
    """A file being assembled under tmp/."""

    entry: FileEntry
    temp: Path
    lock: SoftFileLease
    fd: int = -1
    record: int = -1
    done: set[int] = field(default_factory=set)  # resumed chunk indices
    landed: set[int] = field(default_factory=set)  # chunk indices written by this run
    remaining: int = 0  # chunks still to write before the commit
    marks: list[int] = field(default_factory=list)  # written, not yet in the record


class Placement(NamedTuple):
    """Where a chunk goes: a file being assembled, the offset in it, the chunk's index."""

    target: Target
    offset: int
    chunk_index: int


# chunk digest -> every place that needs it
Needs = dict[str, list[Placement]]


def close(t: Target) -> None:
    for fd in (t.fd, t.record):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    t.fd = t.record = -1


def open_target(cache: NodeCache, t: Target) -> None:
    """Open the temp file, keeping what an interrupted pull already verified
    (``t.done``: the chunk indices its progress record lists)."""
    t.done = cache.read_progress(t.entry) if cache.partial_is_mine(t.entry) else set()
    if t.done:
        t.fd = os.open(t.temp, os.O_RDWR | os.O_NOFOLLOW)
        t.record = cache.start_progress(t.entry)
        return
    cache.reset_partial(t.entry)
    try:
        # Not preallocated: the file grows (sparsely, in any order) only as verified
        # chunks land, so a manifest that declares huge files costs nothing until its
        # bytes arrive and verify; check_room bounds the total beforehand.
        # Exclusive, and writable by this user alone: nobody else can change the bytes
        # between their verification and the commit.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            t.fd = os.open(t.temp, flags, cache.sharing.own_file_mode)
        except FileExistsError:  # planted since the reset: drop it, once
            cache.reset_partial(t.entry)
            t.fd = os.open(t.temp, flags, cache.sharing.own_file_mode)
        share_file(t.fd, cache.sharing.own_file_mode)
        t.record = cache.start_progress(t.entry)
    except BaseException:
        close(t)
        with contextlib.suppress(OSError):
            cache.reset_partial(t.entry)
        raise


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


async def flush_periodically(ctx: Context, targets: list[Target]) -> None:
    """Append progress records every ``FLUSH_SECONDS``; every ``SYNC_SECONDS`` make the
    data durable first (``fdatasync`` on a duplicate descriptor, in a worker thread)."""
    loop = asyncio.get_running_loop()
    last_sync = time.monotonic()
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        if time.monotonic() - last_sync < SYNC_SECONDS:
            flush(targets)
            continue
        last_sync = time.monotonic()
        pending = [(t, len(t.marks), os.dup(t.fd)) for t in targets if t.fd >= 0 and t.marks]
        try:
            await loop.run_in_executor(ctx.executor, sync_all, [fd for _, _, fd in pending])
        finally:
            for _t, _n, fd in pending:
                os.close(fd)
        for t, n, _fd in pending:
            flush([t], upto=n, sync=True)


def sync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fdatasync(fd)


def flush(targets: list[Target], upto: int | None = None, sync: bool = False) -> None:
    """Append the chunks written since the last flush (the first ``upto`` of them) to each
    progress record. Runs on the event loop thread, which alone touches ``marks``."""
    for t in targets:
        if t.record < 0 or not t.marks:
            continue
        n = len(t.marks) if upto is None else upto
        marks, t.marks = t.marks[:n], t.marks[n:]
        os.write(t.record, ("\n".join(map(str, marks)) + "\n").encode())
        if sync:
            os.fsync(t.record)
