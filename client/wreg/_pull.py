"""Pull: resolve → plan → seed from the node cache → fetch the rest in parallel →
decode + verify each chunk → ``pwrite`` into a temp file that grows as verified chunks
land → verify the whole file → atomic rename into ``blobs/`` → snapshot (and ``-o DIR``).

Memory is bounded: at most ``inflight_bytes`` of chunk buffers exist, allocated once and
reused (``wreg._buffers``), and the number of chunks in flight follows from it.

Each distinct chunk is fetched once per pull even if several files hold it, and chunks
some cached blob already holds are copied from it (``copy_file_range``: kernel-side, a
reflink where the filesystem can) instead of downloaded; from a blob the cache does not
trust (``NodeCache.blob_trusted``) a chunk is read and hashed before it is written.
A file is committed only as the inode that was verified, and its stat is recorded
(``NodeCache.commit_blob``).

Resume: a file is assembled in ``tmp/<hex>.part`` (its name follows from its digest)
next to ``tmp/<hex>.progress``, an append-only list of the chunk indices already written
and verified. A pull killed at any point and run again keeps those chunks and fetches
only the rest. The record is appended every ``_FLUSH_SECONDS`` and fsynced (after an
``fdatasync`` of the data) every ``_SYNC_SECONDS``; should a crash still leave a recorded
chunk unwritten, the whole-file check catches it and the chunks that fail their own
digest are fetched again.

One download per node: a file is assembled only by the process holding its lock
(``locks/file-<hex>.lock``); another process that needs the same file waits for it and
then uses the blob. The pull of a manifest holds ``locks/snapshot-<hex>.lock``, which
also tells ``wreg cache prune`` that the snapshot is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from wreg import _buffers
from wreg._cache import POLL_SECONDS, ChunkLocation, NodeCache, acquire, share_file
from wreg._cache_ops import LinkMode, materialize, resolve_offline
from wreg._progress import Progress
from wreg._results import PullResult
from wreg.core.batch import FRAME_HEADER_SIZE
from wreg.core.digest import Hasher, digest_bytes
from wreg.core.errors import ErrorCode, ErrorKind, WregError
from wreg.core.manifest import FileEntry, Manifest
from wreg.core.reference import Reference

if TYPE_CHECKING:
    from filelock import SoftFileLease

    from wreg._http import ChunkReader, Registry

_FLUSH_SECONDS: Final = 0.5
_SYNC_SECONDS: Final = 5.0
_SEED_BATCH: Final = 64 << 20
# Chunks smaller than this are fetched in batches (``_fetch``), larger ones alone.
_BATCH_CHUNK_MAX: Final = 1 << 20
# Per chunk in a batch: the frame header and room for the chunk's encoding header.
_FRAME_SLACK: Final = FRAME_HEADER_SIZE + 128


@dataclass(slots=True, eq=False)
class _Target:
    """A file being assembled under tmp/."""

    entry: FileEntry
    temp: Path
    lock: SoftFileLease
    fd: int = -1
    record: int = -1
    done: set[int] = field(default_factory=set)
    remaining: int = 0
    marks: list[int] = field(default_factory=list)


class _Place(NamedTuple):
    """Where a chunk goes: a file being assembled, the offset in it, the chunk's index."""

    target: _Target
    offset: int
    chunk_index: int


class _Seed(NamedTuple):
    """A chunk to copy from a cached blob to every ``(fd, offset)`` of ``writes``."""

    digest: str
    source: ChunkLocation
    writes: list[tuple[int, int]]


# chunk digest -> every place that needs it
_Needs = dict[str, list[_Place]]


@dataclass(slots=True)
class _Stats:
    received: int = 0  # encoded bytes on the wire
    chunks: int = 0  # chunks downloaded
    fetched_raw: int = 0  # raw bytes written from downloaded chunks (every placement)
    resumed: int = 0  # raw bytes found written and verified by an interrupted pull


@dataclass(slots=True)
class _Context:
    registry: Registry
    name: str  # the repository chunks are fetched through
    cache: NodeCache
    executor: Executor
    progress: Progress
    concurrency: int
    inflight_bytes: int
    stats: _Stats = field(default_factory=_Stats)


async def resolve(registry: Registry, ref: Reference) -> tuple[Manifest, bytes]:
    body, claimed = await registry.get_manifest(ref)
    digest = digest_bytes(body)
    expected = ref.digest or claimed
    if expected is not None and digest != expected:
        raise ErrorCode.DIGEST_MISMATCH.error(
            f"manifest for {ref} does not match its digest: expected {expected}, got {digest}"
        )
    return Manifest.from_json_bytes(body), body


def select_files(
    manifest: Manifest, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[FileEntry]:
    """The files whose path matches an ``include`` pattern (all if none) and no
    ``exclude`` pattern; ``fnmatch`` rules, so ``*`` also matches ``/``."""
    chosen = [
        e
        for e in manifest.files
        if (not include or any(fnmatch.fnmatchcase(e.path, p) for p in include))
        and not any(fnmatch.fnmatchcase(e.path, p) for p in exclude)
    ]
    if not chosen and manifest.files:
        raise ErrorCode.FILTER_INVALID.error(
            f"no file of the model matches --include {list(include)} --exclude {list(exclude)}",
        )
    return chosen


def _filesystem(path: Path) -> tuple[int, Path]:
    """(device, nearest existing directory) of where ``path`` is or would be created."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev, path


def check_room(
    cache: NodeCache,
    ref: Reference,
    selected: Sequence[FileEntry],
    dest: Path | None,
    max_total: int | None,
) -> None:
    """Refuse, before writing anything, a pull that would write too much.

    What a pull writes is the sizes of its files, not of the chunks it downloads: a
    manifest may list one 4 MiB chunk a million times, so a tiny download can mean
    terabytes on disk. Counted: each file missing from the cache once (blobs are
    deduplicated), and with ``dest`` on another filesystem than the cache every selected
    file again (copied; on the same one they are hardlinked). With ``max_total`` the sum
    must not exceed it; without, each filesystem's share must fit in its free space.
    """
    cache_fs = _filesystem(cache.layout.blobs_dir)
    blobs = {e.digest: e.size for e in selected if not cache.has_blob(e)}
    writes = {cache_fs[0]: (cache_fs[1], sum(blobs.values()))}
    if dest is not None:
        dest_fs = _filesystem(dest)
        if dest_fs[0] != cache_fs[0]:
            writes[dest_fs[0]] = (dest_fs[1], sum(e.size for e in selected))
    needed = sum(n for _, n in writes.values())
    if max_total is not None:
        if needed > max_total:
            raise ErrorCode.PULL_TOO_LARGE.error(
                f"pulling {ref} would write {_gib(needed)}, more than --max-total "
                f"{_gib(max_total)}; raise --max-total or narrow it with --include/--exclude",
                detail={"needed": needed, "limit": max_total},
            )
        return
    for where, n in writes.values():
        free = shutil.disk_usage(where).free
        if n > free:
            raise ErrorCode.PULL_TOO_LARGE.error(
                f"pulling {ref} would write {_gib(n)} to {where}, which has {_gib(free)} free; "
                "free space, or pass --max-total to override",
                detail={"needed": n, "limit": free, "path": str(where)},
            )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB ({n} bytes)"


async def pull(
    registry: Registry | None,
    cache: NodeCache,
    ref: Reference,
    dest: Path | None,
    executor: Executor,
    progress: Progress,
    concurrency: int,
    *,
    inflight_bytes: int = 128 << 20,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_total: int | None = None,
    force: bool = False,
    link: LinkMode = "hardlink",
) -> PullResult:
    """Pull ``ref`` into the node cache; ``registry=None`` means offline.

    ``max_total`` caps the bytes the pull may write (see ``check_room``); ``link`` is
    how files get into ``dest`` (see ``materialize``).
    """
    if registry is None:
        manifest = resolve_offline(cache, ref)
    else:
        manifest, body = await resolve(registry, ref)
        cache.save_manifest(manifest.digest, body)
    selected = select_files(manifest, include, exclude)
    check_room(cache, ref, selected, dest, max_total)
    total = sum(e.size for e in selected)
    stats = _Stats()
    snapshot_lock = cache.snapshot_lock(manifest.digest)
    await acquire(snapshot_lock)
    try:
        for _round in range(3):  # a prune racing with us can remove a blob we counted on
            todo = list(
                {
                    e.digest: e
                    for e in selected
                    if not cache.has_blob(e) and not cache.adopt_blob(e)
                }.values()
            )
            if not todo:
                break
            if registry is None:
                names = ", ".join(e.path for e in todo[:3]) + (", ..." if len(todo) > 3 else "")
                raise ErrorCode.SNAPSHOT_INCOMPLETE.error(
                    f"offline: {ref} ({manifest.digest}) is incomplete in the node cache: "
                    f"{len(todo)} of {len(selected)} files missing ({names}); "
                    "pull it once while online",
                )
            ctx = _Context(
                registry, ref.name, cache, executor, progress, concurrency, inflight_bytes, stats
            )
            progress.start("downloading", sum(e.size for e in todo))
            await _download(ctx, todo)
        snapshot = cache.build_snapshot(ref.name, manifest, selected)
        cache.touch_snapshot(ref.name, manifest.digest)
        if ref.tag is not None and registry is not None:
            cache.write_ref(ref.name, ref.tag, manifest.digest)
        out = snapshot
        if dest is not None:
            materialize(cache, selected, dest, force=force, link=link)
            out = dest
    finally:
        snapshot_lock.release()
    return PullResult(
        reference=str(ref),
        manifest=manifest.digest,
        path=str(out),
        files=len(selected),
        bytes_total=total,
        bytes_downloaded=stats.received,
        bytes_from_cache=max(0, total - stats.fetched_raw - stats.resumed),
        bytes_resumed=stats.resumed,
        chunks_downloaded=stats.chunks,
    )


# Failures no retry or resume can mend: the partial files of the pull are dropped (an
# interrupted or transiently failed pull keeps them, to resume where it stopped).
_PERMANENT: Final = frozenset({ErrorKind.INTEGRITY, ErrorKind.NOT_FOUND})
# A full disk or quota: the partial files are dropped too, to give the room back (files
# grow as chunks land, so the disk fills mid-pull rather than at preallocation).
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


async def _download(ctx: _Context, todo: list[FileEntry]) -> None:
    """Make every file of ``todo`` a blob, assembling those no other process is working on
    and waiting for the others; a permanent failure or a full disk leaves none of their
    partial files."""
    pending = todo
    while pending:
        mine: list[_Target] = []
        busy: list[FileEntry] = []
        for entry in pending:
            lock = ctx.cache.file_lock(entry.digest)
            if not await acquire(lock, wait=False):
                busy.append(entry)
            elif ctx.cache.has_blob(entry):  # finished by another process meanwhile
                lock.release()
            else:
                mine.append(_Target(entry, ctx.cache.temp_path(entry.digest), lock))
        try:
            if mine:
                await _assemble(ctx, mine)
        except (WregError, OSError) as exc:
            permanent = exc.code.kind in _PERMANENT if isinstance(exc, WregError) else False
            if permanent or (isinstance(exc, OSError) and exc.errno in _NO_ROOM):
                for t in mine:  # another run would fail the same way, or the disk is full
                    _close(t)
                    ctx.cache.reset_partial(t.entry)
            raise
        finally:
            for t in mine:
                _close(t)
                t.lock.release()
        pending = [e for e in busy if not ctx.cache.has_blob(e)]
        if pending and not mine:
            await asyncio.sleep(POLL_SECONDS)


def _close(t: _Target) -> None:
    for fd in (t.fd, t.record):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    t.fd = t.record = -1


def _open_target(cache: NodeCache, t: _Target) -> None:
    """Open the temp file, keeping what an interrupted pull already verified."""
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
        _close(t)
        with contextlib.suppress(OSError):
            cache.reset_partial(t.entry)
        raise


async def _assemble(ctx: _Context, targets: list[_Target]) -> None:
    loop = asyncio.get_running_loop()
    needs: _Needs = {}
    sizes: dict[str, int] = {}
    for t in targets:
        _open_target(ctx.cache, t)
        for index, (offset, chunk) in enumerate(t.entry.chunk_offsets()):
            if index in t.done:
                ctx.stats.resumed += chunk.size
                ctx.progress.advance(chunk.size)
                continue
            needs.setdefault(chunk.digest, []).append(_Place(t, offset, index))
            sizes[chunk.digest] = chunk.size
            t.remaining += 1

    finals: list[asyncio.Future[None]] = []

    def written(t: _Target, index: int) -> None:
        t.marks.append(index)
        t.remaining -= 1
        if t.remaining == 0:
            finals.append(asyncio.ensure_future(_finalize(ctx, t)))

    flusher = asyncio.ensure_future(_flush_periodically(ctx, targets))
    try:
        for t in targets:
            if t.remaining == 0:
                finals.append(asyncio.ensure_future(_finalize(ctx, t)))
        seeded = ctx.cache.locate_chunks(needs)
        for batch in _seed_batches(seeded, needs):
            copied = await loop.run_in_executor(ctx.executor, _seed, batch)
            for digest in copied:
                for t, _offset, index in needs.pop(digest):
                    ctx.progress.advance(sizes[digest])
                    written(t, index)
        await _fetch(ctx, needs, sizes, written)
        await asyncio.gather(*finals)
    except BaseException:
        for task in finals:
            task.cancel()
        await asyncio.gather(*finals, return_exceptions=True)
        with contextlib.suppress(OSError):
            _flush(targets)
        raise
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher


def _seed_batches(seeded: dict[str, ChunkLocation], needs: _Needs) -> Iterable[list[_Seed]]:
    batch: list[_Seed] = []
    size = 0
    for digest, source in seeded.items():
        batch.append(_Seed(digest, source, [(p.target.fd, p.offset) for p in needs[digest]]))
        size += source.length * len(needs[digest])
        if size >= _SEED_BATCH:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _seed(batch: list[_Seed]) -> list[str]:
    """Copy chunks from cached blobs (kernel-side where the filesystem can); returns the
    digests copied (a blob removed meanwhile is skipped: its chunks get downloaded).

    A chunk of a blob the cache does not trust (``ChunkLocation.trusted``) is read and
    hashed first, and skipped unless it is the chunk named; either way the file's
    whole digest is checked before it is committed."""
    copied = []
    for digest, (blob, offset, length, trusted), writes in batch:
        try:
            src = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode) or st.st_size < offset + length:
                continue
            if trusted:
                for fd, at in writes:
                    _copy_range(src, fd, offset, at, length)
            else:
                data = os.pread(src, length, offset)
                if len(data) != length or digest_bytes(data) != digest:
                    continue
                for fd, at in writes:
                    _pwrite_all(fd, memoryview(data), at)
        finally:
            os.close(src)
        copied.append(digest)
    return copied


def _copy_range(src: int, dst: int, offset: int, at: int, length: int) -> None:
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, offset + done, at + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.pwrite(dst, os.pread(src, length - done, offset + done), at + done)
        if n == 0:
            raise ErrorCode.DIGEST_MISMATCH.error("a cached blob is shorter than the index says")
        done += n


async def _fetch(
    ctx: _Context,
    needs: _Needs,
    sizes: dict[str, int],
    written: Callable[[_Target, int], None],
) -> None:
    """Download, decode, verify and write every chunk of ``needs`` with a fixed set of
    workers, each owning one reused pair of buffers (encoded, raw).

    Chunks under ``_BATCH_CHUNK_MAX`` go in batches (``_jobs``): one request for as many
    as fit a worker's encoded buffer (and ``MAX_BATCH_CHUNKS``), so the batch counts
    against ``inflight_bytes`` like one large chunk. A batch is verified whole before any
    of it is written. Large chunks keep the single, cacheable GET; so does everything
    when the registry has no batched route (``Registry.batches``).
    """
    if not needs:
        return
    from wreg._http import BatchesUnsupported, BatchTooLarge, with_retries

    size = _buffers.buffer_size(max(sizes[d] for d in needs))
    registry, stats = ctx.registry, ctx.stats
    jobs = _jobs(needs, sizes, size, registry.batches)

    done: set[str] = set()

    def landed(digest: str) -> None:
        done.add(digest)
        places = needs[digest]
        stats.chunks += 1
        stats.fetched_raw += sizes[digest] * len(places)
        for t, _offset, index in places:
            ctx.progress.advance(sizes[digest])
            written(t, index)

    def fetch_one(reader: ChunkReader, digest: str, encoded: bytearray, raw: bytearray) -> int:
        """One attempt, in a fetch thread: read the chunk, decode, verify, write it."""
        n = reader.get_into(ctx.name, digest, encoded)
        _decode_write([(digest, memoryview(encoded)[:n], sizes[digest], needs[digest])], raw)
        return n

    async def one(digest: str, slot: _Slot) -> None:
        def attempt() -> asyncio.Future[int]:
            slot.running = threads.submit(fetch_one, slot.reader, digest, slot.encoded, slot.raw)
            return asyncio.wrap_future(slot.running)

        stats.received += await with_retries(attempt)
        slot.running = None
        landed(digest)

    def fetch_many(reader: ChunkReader, digests: list[str], slot: _Slot) -> None:
        """One attempt, in a fetch thread: read a batch, verify all of it, write it."""
        spans = reader.fetch_into(ctx.name, digests, slot.encoded)
        view = memoryview(slot.encoded)
        work = [
            (d, view[start:end], sizes[d], needs[d])
            for d, (start, end) in zip(digests, spans, strict=True)
        ]
        _decode_write(work, slot.raw)
        slot.batch_received = sum(end - start for start, end in spans)  # chunk bytes only

    async def many(digests: list[str], slot: _Slot) -> bool:
        """One batch; False when it has to go one chunk at a time instead."""
        if not registry.batches:
            return False

        def attempt() -> asyncio.Future[None]:
            slot.running = threads.submit(fetch_many, slot.reader, digests, slot)
            return asyncio.wrap_future(slot.running)

        try:
            await with_retries(attempt)
        except (BatchesUnsupported, BatchTooLarge):
            return False
        finally:
            slot.running = None
        stats.received += slot.batch_received
        for digest in digests:
            landed(digest)
        return True

    async def worker() -> None:
        slot = _Slot(registry.chunk_reader(), _buffers.take(size), _buffers.take(size))
        try:
            for job in queue:
                if isinstance(job, str):
                    await one(job, slot)
                elif not await many(job, slot):
                    for digest in job:
                        await one(digest, slot)
        finally:
            slot.release(ctx.inflight_bytes)

    # One fetch thread per worker: each reads its chunk (or batch), decodes, verifies and
    # writes it in one hop (``ChunkReader``: socket reads outside the GIL).
    most = _buffers.slots_for(ctx.inflight_bytes, size, 2, ctx.concurrency)
    threads = ThreadPoolExecutor(max_workers=max(1, most), thread_name_prefix="wreg-fetch")
    try:
        first = next((i for i, job in enumerate(jobs) if isinstance(job, list)), None)
        if first is not None and not registry.batches_known:
            # Whether this registry has the batched route is learnt from one batch before
            # the workers start: without it, every chunk becomes a job of its own again,
            # fetched in parallel as before, not one batch's chunks one after another.
            probe_slot = _Slot(registry.chunk_reader(), _buffers.take(size), _buffers.take(size))
            try:
                probe = jobs.pop(first)
                assert isinstance(probe, list)  # noqa: S101 - narrows: found as a list above
                if not await many(probe, probe_slot):
                    left = {d: needs[d] for d in needs if d not in done}
                    jobs = _jobs(left, sizes, size, False)
            finally:
                probe_slot.release(ctx.inflight_bytes)
        if not jobs:
            return
        queue = iter(jobs)
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(len(jobs), most))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        threads.shutdown(wait=False)


@dataclass(slots=True, eq=False)
class _Slot:
    """A fetch worker's connection and buffers, and the thread job using them if any."""

    reader: ChunkReader
    encoded: bytearray
    raw: bytearray
    running: Future[Any] | None = None
    batch_received: int = 0

    def release(self, inflight_bytes: int) -> None:
        """Close the connection; give the buffers back unless a fetch thread may still
        write into them (a cancelled pull: its read is broken off, its buffers dropped)."""
        if self.running is not None and not self.running.done():
            self.reader.abort()  # the thread's read fails; it drops its connection itself
            return
        self.reader.close()
        _buffers.give(self.encoded, inflight_bytes)
        _buffers.give(self.raw, inflight_bytes)


def _jobs(
    needs: _Needs, sizes: dict[str, int], budget: int, batches: bool
) -> list[str | list[str]]:
    """The fetch plan, in manifest order: a digest alone (a large chunk, or every chunk
    when ``batches`` is off), or a batch of small ones whose encodings (estimated from
    the raw size, ``_FRAME_SLACK`` each) fill at most ``budget`` bytes."""
    from wreg.core.sizes import MAX_BATCH_CHUNKS

    jobs: list[str | list[str]] = []
    current: list[str] = []
    used = 0
    for digest in needs:
        cost = sizes[digest] + _FRAME_SLACK
        if not batches or sizes[digest] >= _BATCH_CHUNK_MAX or cost > budget:
            jobs.append(digest)
            continue
        if current and (used + cost > budget or len(current) >= MAX_BATCH_CHUNKS):
            jobs.append(current)
            current, used = [], 0
        current.append(digest)
        used += cost
    if current:
        jobs.append(current if len(current) > 1 else current[0])
    return jobs


def _decode_write(work: list[tuple[str, memoryview, int, list[_Place]]], raw: bytearray) -> None:
    """Decode and verify each chunk of ``work`` (digest, encoded bytes, raw size, places),
    all of them first, then ``pwrite`` each wherever it goes (worker thread). The raw
    sizes add up to at most ``len(raw)``: decoded chunks lie side by side in it."""
    # Imported here: numpy and zstandard cost a warm pull ~0.1 s of start-up for nothing.
    from wreg.core.encoding import HEADER_SIZE, Codec, Transform, decode_chunk_into, parse_header

    out = memoryview(raw)
    at = 0
    verified: list[tuple[memoryview, list[_Place]]] = []
    for digest, encoded, size, places in work:
        codec, transform, raw_len = parse_header(encoded)
        if raw_len != size:
            raise ErrorCode.DIGEST_MISMATCH.error(
                f"chunk {digest} is {raw_len} bytes, the manifest says {size}"
            )
        if (
            codec is Codec.NONE
            and transform is Transform.NONE
            and len(encoded) - HEADER_SIZE == raw_len
        ):
            data = encoded[HEADER_SIZE:]  # stored raw: verify and write straight from the buffer
            actual = digest_bytes(data)
            if actual != digest:
                raise ErrorCode.DIGEST_MISMATCH.error(
                    f"chunk content does not match its digest: expected {digest}, got {actual}",
                    detail={"expected": digest, "actual": actual},
                )
        else:
            decode_chunk_into(encoded, out[at:], expected_digest=digest)
            data = out[at : at + raw_len]
            at += raw_len
        verified.append((data, places))
    for data, places in verified:
        for t, offset, _index in places:
            _pwrite_all(t.fd, data, offset)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


async def _flush_periodically(ctx: _Context, targets: list[_Target]) -> None:
    """Append progress records every ``_FLUSH_SECONDS``; every ``_SYNC_SECONDS`` make the
    data durable first (``fdatasync`` on a duplicate descriptor, in a worker thread)."""
    loop = asyncio.get_running_loop()
    last_sync = time.monotonic()
    while True:
        await asyncio.sleep(_FLUSH_SECONDS)
        if time.monotonic() - last_sync < _SYNC_SECONDS:
            _flush(targets)
            continue
        last_sync = time.monotonic()
        pending = [(t, len(t.marks), os.dup(t.fd)) for t in targets if t.fd >= 0 and t.marks]
        try:
            await loop.run_in_executor(ctx.executor, _sync_all, [fd for _, _, fd in pending])
        finally:
            for _t, _n, fd in pending:
                os.close(fd)
        for t, n, _fd in pending:
            _flush([t], upto=n, sync=True)


def _sync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fdatasync(fd)


def _flush(targets: list[_Target], upto: int | None = None, sync: bool = False) -> None:
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


async def _finalize(ctx: _Context, t: _Target) -> None:
    """Check the file; repair chunks that fail their own digest; commit the blob.

    Schema 2 (``FileEntry.built_from_chunks``): every chunk written by this run was
    verified on arrival (or seeded from a trusted blob, or hashed on the way from an
    untrusted one), so only the chunks resumed from an earlier run — which a crash may
    have lost — are read back. Schema 1: the whole file is read back for its digest.
    """
    loop = asyncio.get_running_loop()
    bad: list[int] = []
    if t.entry.built_from_chunks:
        bad = await loop.run_in_executor(ctx.executor, _bad_chunks, t, sorted(t.done))
        ok = not bad and os.fstat(t.fd).st_size == t.entry.size
    else:
        ok = await loop.run_in_executor(ctx.executor, _verify_file, t)
    if not ok:
        if not bad:  # which chunks are wrong is not known yet: look at every one
            bad = await loop.run_in_executor(ctx.executor, _bad_chunks, t, None)
        needs: _Needs = {}
        sizes: dict[str, int] = {}
        for index in bad:
            offset, chunk = list(t.entry.chunk_offsets())[index]
            needs.setdefault(chunk.digest, []).append(_Place(t, offset, index))
            sizes[chunk.digest] = chunk.size
        await _fetch(ctx, needs, sizes, lambda _t, _i: None)
        if not bad or not await loop.run_in_executor(ctx.executor, _verified, t):
            ctx.cache.reset_partial(t.entry)
            raise ErrorCode.DIGEST_MISMATCH.error(
                f"{t.entry.path}: assembled file does not match its digest {t.entry.digest}"
            )
    try:
        ctx.cache.commit_blob(t.temp, t.entry, t.fd)
    finally:
        _close(t)


def _verified(t: _Target) -> bool:
    """After a repair: every chunk matches (schema 2), or the whole file does (schema 1)."""
    if t.entry.built_from_chunks:
        return not _bad_chunks(t, None) and os.fstat(t.fd).st_size == t.entry.size
    return _verify_file(t)


def _verify_file(t: _Target) -> bool:
    """Whether the temp file's whole-file digest is right (read into a reused buffer)."""
    size = _buffers.buffer_size(8 << 20)
    buf = _buffers.take(size)
    try:
        view = memoryview(buf)
        hasher = Hasher()
        offset = 0
        while offset < t.entry.size:
            n = os.preadv(t.fd, [view[: min(size, t.entry.size - offset)]], offset)
            if n <= 0:
                return False
            hasher.update(view[:n])
            offset += n
        return hasher.digest() == t.entry.digest
    finally:
        _buffers.give(buf)


def _bad_chunks(t: _Target, among: list[int] | None) -> list[int]:
    """Indices of the chunks (of ``among``, default all) whose bytes in the temp file do
    not match their digest."""
    chunks = list(t.entry.chunk_offsets())
    return [
        index
        for index in (range(len(chunks)) if among is None else among)
        if digest_bytes(os.pread(t.fd, chunks[index][1].size, chunks[index][0]))
        != chunks[index][1].digest
    ]
