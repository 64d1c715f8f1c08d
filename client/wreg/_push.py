"""Push: scan → (stat cache | chunk + hash) → ask which chunks are missing → encode +
upload those → commit the manifest (and move the tag in the same transaction).

The stages overlap: as soon as one file is hashed, its chunks are checked against the
registry (files finished meanwhile share one query) and the missing ones go to upload
workers, which read, encode (thread pool) and send them while later files are still being
hashed. Files are read with ``preadv`` into reused buffers, so memory stays bounded
whatever the model's size. A file can also come from memory (``MemoryFile``: the virtual
safetensors file of ``push_tensors``): it is hashed where it lies and copied into the
same buffers to be checked and sent; its chunks are those of the same bytes on disk.

Stat cache: the node cache remembers, per absolute path, (size, mtime_ns, ctime_ns,
inode, device, chunker version) → whole-file digest and chunk list. A file whose stat
matches is not read at all, so re-pushing an unchanged directory costs a few ``stat``
calls and one missing-chunk query. Files modified less than ``_RACY_SECONDS`` before
they were hashed are not remembered (their mtime could hide a later write).

Progress, two phases whose advances add up to their totals: "hashing" (the bytes of the
files read and hashed, reported as they are hashed, in steps of ``_REPORT_BYTES``), then
"uploading" (the raw bytes of the missing chunks, reported as each is sent). Uploads run
while later files are still hashed, but which chunks are missing is known only once every
file is hashed and checked: the "uploading" phase starts then, with its total, and first
advances by what was sent meanwhile. A push with nothing missing has no "uploading" phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from wreg import _buffers
from wreg._cache import HashedChunk, StatRecord
from wreg._progress import Progress
from wreg._results import PushResult
from wreg.core.batch import FRAME_HEADER_SIZE
from wreg.core.digest import digest_bytes, file_identity
from wreg.core.errors import ErrorCode, IntegrityError, InvalidInput, WregError
from wreg.core.manifest import MODE_EXEC, MODE_FILE, ChunkRef, FileEntry, Manifest
from wreg.core.reference import Reference
from wreg.core.sizes import CDC_AVG, CDC_MAX, CDC_MIN, CHUNK_MAX, CHUNK_PACK, MAX_BATCH_CHUNKS

if TYPE_CHECKING:
    from wreg._cache import NodeCache
    from wreg._http import Registry
    from wreg.core.chunking import ChunkSpec

# Chunk lists are only reusable while the chunker is the same.
# "v2": remembered digests are schema-2 identities (rows from v1 are not reused).
CHUNKER: Final = f"v2/{CHUNK_MAX}/{CHUNK_PACK}/{CDC_AVG}/{CDC_MIN}/{CDC_MAX}"
_RACY_SECONDS: Final = 2.0
# Missing chunks go in batches of at most this many raw bytes (``_Uploader``): per request
# and per transaction the registry's cost is mostly fixed, so a few 4 MiB chunks share one
# (``bench/transfer.py``: server CPU per GB pushed about a third lower than one each).
_BATCH_BYTES: Final = 8 << 20
# Hashing reports progress every this many bytes (and at a file's end): a multi-GB file
# moves its bar, a file of many small tensors does not make a call per 64 KiB piece.
_REPORT_BYTES: Final = 4 << 20


class MemoryFile(Protocol):
    """A file's content held in memory (``push_tensors``' virtual safetensors file)."""

    @property
    def size(self) -> int: ...

    def plan(self) -> list[ChunkSpec]:
        """The chunks ``plan_file`` would cut from the same bytes on disk."""
        ...

    def view(self, offset: int, length: int) -> memoryview:
        """The bytes at ``offset``, ``length`` of them (a view where possible)."""
        ...


@dataclass(slots=True, eq=False)
class _File:
    path: Path
    relpath: str
    mode: int
    size: int
    st: os.stat_result | None = None
    """The stat of ``path`` when hashed; None for a file in memory."""
    content: MemoryFile | None = None
    """Where the bytes are when they are not read from ``path``."""
    chunks: list[HashedChunk] | None = None
    digest: str | None = None


class _Source(NamedTuple):
    """Where a chunk to push is read from: the first file found to hold it."""

    file: _File
    chunk: HashedChunk


def scan_tree(root: Path, follow_symlinks: bool = False) -> list[tuple[Path, str, int]]:
    """(absolute path, POSIX relative path, mode) of every regular file under ``root``."""
    return [(p, rel, mode) for p, rel, mode, _st in _scan(root, follow_symlinks)[0]]


def _scan(
    root: Path, follow_symlinks: bool = False
) -> tuple[list[tuple[Path, str, int, os.stat_result]], list[str]]:
    """The files to push, and the relative paths of the symlinks skipped.

    A symlink to a file inside ``root`` pushes its content; a symlink to a directory is
    not descended. A symlink that leaves ``root`` (or leads nowhere) is skipped and
    listed, so a push never uploads what lies outside the directory by accident;
    ``follow_symlinks`` follows every link, to files and directories, wherever it leads.
    """
    if not root.exists():
        raise ErrorCode.LOCAL_PATH_MISSING.error(f"cannot push {root}: no such file or directory")
    if not root.is_dir():
        raise ErrorCode.LOCAL_PATH_MISSING.error(f"cannot push {root}: not a directory")
    inside = root.resolve()
    found = []
    skipped = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        dirnames.sort()
        names = sorted(filenames)
        if not follow_symlinks:  # a link to a directory outside: say it is not pushed
            names = sorted([*names, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())])
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not follow_symlinks and path.is_symlink():
                if not path.resolve().is_relative_to(inside) or not path.exists():
                    skipped.append(rel)
                    continue
                if path.is_dir():
                    continue  # a link to a directory inside: not descended, as before
            try:
                st = path.stat()  # a link to a file inside pushes its content
            except FileNotFoundError:  # a broken link
                skipped.append(rel)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            mode = MODE_EXEC if st.st_mode & 0o111 else MODE_FILE
            found.append((path, rel, mode, st))
    if not found:
        raise ErrorCode.LOCAL_EMPTY.error(f"nothing to push: {root} contains no files")
    return found, skipped


def default_reference(root: Path) -> Reference:
    name = root.resolve().name
    try:
        return Reference.parse(name)
    except InvalidInput:
        raise ErrorCode.NAME_INVALID.error(
            f"directory name {name!r} is not a valid repository name; "
            "give a reference, e.g. `wreg push DIR team/model@v1`",
        ) from None


async def push(
    registry: Registry,
    root: Path,
    ref: Reference,
    executor: Executor,
    progress: Progress,
    concurrency: int,
    *,
    cache: NodeCache | None = None,
    inflight_bytes: int = 128 << 20,
    follow_symlinks: bool = False,
    scanned: Sequence[tuple[Path, str, int, os.stat_result]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    memory: Sequence[tuple[str, MemoryFile]] = (),
) -> PushResult:
    """Push ``root`` as ``ref``; ``metadata`` goes into the manifest as it is.

    ``scanned`` replaces the scan of ``root``: (path to read the content from, POSIX
    relative path, mode, stat of that path) per file, as ``_scan`` lists them
    (``wreg import-hf`` reads a snapshot's files from the blobs its links lead to).
    ``memory`` adds files (POSIX relative path, content) whose bytes are in memory
    (``push_tensors``): pushed as their bytes would be from disk, never stat-cached.
    """
    if ref.digest is not None:
        raise ErrorCode.REFERENCE_INVALID.error("push needs a tag, not a digest")
    if scanned is None:
        scanned, skipped = _scan(root, follow_symlinks)
    else:
        skipped = []
    files = [_File(p.absolute(), rel, mode, st.st_size, st) for p, rel, mode, st in scanned]
    files += [_File(Path(rel), rel, MODE_FILE, m.size, content=m) for rel, m in memory]
    if cache is not None:
        for f in files:
            known = None if f.st is None else cache.stat_lookup(f.path, f.st, CHUNKER)
            if known is not None:
                f.digest, f.chunks = known
    to_hash = [f for f in files if f.chunks is None]
    total = sum(f.size for f in files)
    if to_hash:
        progress.start("hashing", sum(f.size for f in to_hash))

    where: dict[str, _Source] = {}
    missing: set[str] = set()
    uploads: asyncio.Queue[str | None] = asyncio.Queue()
    ready: asyncio.Queue[_File | None] = asyncio.Queue()
    uploader = _Uploader(registry, ref.name, executor, progress, concurrency, inflight_bytes, where)

    async def query() -> None:
        """Ask which chunks of the files hashed so far are missing; queue those."""
        finished = False
        while not finished:
            batch = [await ready.get()]
            while not ready.empty():
                batch.append(ready.get_nowait())
            finished = None in batch
            fresh: list[str] = []
            for f in batch:
                if f is None:
                    continue
                assert f.chunks is not None  # noqa: S101 - narrows: hashed files have chunks
                for chunk in f.chunks:
                    if chunk.digest not in where:
                        where[chunk.digest] = _Source(f, chunk)
                        fresh.append(chunk.digest)
            if fresh:
                for digest in sorted(await registry.missing_chunks(ref.name, fresh)):
                    missing.add(digest)
                    uploads.put_nowait(digest)
        # Every file hashed and checked: what is to upload is known. (Hashing ends before
        # the last query's round trip does, so the phase starts before a worker has read
        # any chunk of the last file.)
        uploader.report(sum(where[d].chunk.length for d in missing))
        for _ in range(uploader.workers):
            uploads.put_nowait(None)

    async def hash_all() -> None:
        loop = asyncio.get_running_loop()
        for f in files:
            if f.chunks is not None:
                ready.put_nowait(f)
        slots = asyncio.Semaphore(max(1, (os.cpu_count() or 2) // 2))

        def hashed(amount: int) -> None:  # in a worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: the push is over
                loop.call_soon_threadsafe(progress.advance, amount)

        async def one(f: _File) -> None:
            async with slots:
                # Its advances are queued on the loop before its result: all made by now.
                await loop.run_in_executor(executor, _hash_file, f, inflight_bytes, hashed)
            ready.put_nowait(f)

        await asyncio.gather(*(one(f) for f in to_hash))
        ready.put_nowait(None)

    stages = [
        asyncio.ensure_future(hash_all()),
        asyncio.ensure_future(query()),
        *(asyncio.ensure_future(uploader.run(uploads)) for _ in range(uploader.workers)),
    ]
    try:
        await asyncio.gather(*stages)
    except BaseException as exc:
        for task in stages:
            task.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        if cache is not None and isinstance(exc, IntegrityError):
            for f in files:  # a remembered file changed under an unchanged stat: forget it
                if f.st is not None:
                    cache.stat_forget(f.path)
        raise
    if cache is not None and to_hash:
        now = time.time_ns()
        cache.stat_store(
            [
                StatRecord(f.path, f.st, f.digest or "", f.chunks or [])
                for f in to_hash
                if f.st is not None and now - f.st.st_mtime_ns > _RACY_SECONDS * 1e9
            ],
            CHUNKER,
        )

    manifest = Manifest.build(
        (
            FileEntry(
                f.relpath,
                f.size,
                f.digest or "",
                f.mode,
                tuple(ChunkRef(c.digest, c.length) for c in f.chunks or []),
            )
            for f in files
        ),
        metadata,
    )
    body = manifest.to_json_bytes()
    try:
        await registry.put_manifest(ref.name, manifest.digest, body, ref.tag)
    except InvalidInput as exc:
        # Chunks can vanish between the query and the commit (GC): send them again once.
        gone = (exc.detail or {}).get("missing") if isinstance(exc.detail, dict) else None
        if exc.code is not ErrorCode.MANIFEST_CHUNKS_MISSING or not gone:
            raise
        again: asyncio.Queue[str | None] = asyncio.Queue()
        resent = [d for d in dict.fromkeys(gone) if d in where]
        for digest in resent:
            again.put_nowait(digest)
        uploader.report(sum(where[d].chunk.length for d in resent), "re-uploading")
        for _ in range(uploader.workers):
            again.put_nowait(None)
        await asyncio.gather(*(uploader.run(again) for _ in range(uploader.workers)))
        await registry.put_manifest(ref.name, manifest.digest, body, ref.tag)
    return PushResult(
        reference=str(ref),
        manifest=manifest.digest,
        files=len(files),
        bytes_total=total,
        bytes_new=sum(where[d].chunk.length for d in missing),
        bytes_sent=uploader.sent,
        chunks_total=len(where),
        chunks_new=len(missing),
        bytes_hashed=sum(f.size for f in to_hash),
        skipped=skipped,
    )


class _Counter:
    """Bytes hashed in a worker thread, passed to ``report`` in steps of at least
    ``_REPORT_BYTES``; ``flush`` passes on the rest."""

    __slots__ = ("_pending", "_report")

    def __init__(self, report: Callable[[int], None] | None) -> None:
        self._report = report
        self._pending = 0

    def add(self, amount: int) -> None:
        self._pending += amount
        if self._pending >= _REPORT_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._report is not None and self._pending:
            self._report(self._pending)
        self._pending = 0


def _hash_file(f: _File, budget: int, report: Callable[[int], None] | None = None) -> None:
    """Cut ``f`` into chunks and hash them, in one read; the file's digest is its chunk
    list's identity (schema 2), so the whole file is not hashed again (worker thread).
    ``report`` hears of the bytes hashed as they are."""
    if f.content is not None:
        _hash_memory(f, f.content, report)
        return
    from wreg.core.chunking import plan_file  # lazy: an unchanged re-push never cuts

    specs = plan_file(f.path)
    size = _buffers.buffer_size(max((s.length for s in specs), default=1))
    buf = _buffers.take(size)
    view = memoryview(buf)
    chunks: list[HashedChunk] = []
    hashed = _Counter(report)
    try:
        fd = os.open(f.path, os.O_RDONLY)
        try:
            for s in specs:
                data = view[: s.length]
                if os.preadv(fd, [data], s.offset) != s.length:
                    raise _changed(f)
                chunks.append(HashedChunk(s.offset, s.length, s.dtype, digest_bytes(data)))
                hashed.add(s.length)
            hashed.flush()
            after = os.fstat(fd)
        finally:
            os.close(fd)
    finally:
        _buffers.give(buf, budget)
    if f.st is None or (after.st_size, after.st_mtime_ns) != (f.st.st_size, f.st.st_mtime_ns):
        raise _changed(f)
    f.chunks, f.digest = chunks, file_identity((c.digest, c.length) for c in chunks)


def _hash_memory(f: _File, content: MemoryFile, report: Callable[[int], None] | None) -> None:
    """``_hash_file`` for a file in memory: each chunk hashed where it lies, no copy."""
    chunks: list[HashedChunk] = []
    hashed = _Counter(report)
    for s in content.plan():
        chunks.append(
            HashedChunk(s.offset, s.length, s.dtype, digest_bytes(content.view(s.offset, s.length)))
        )
        hashed.add(s.length)
    hashed.flush()
    f.chunks, f.digest = chunks, file_identity((c.digest, c.length) for c in chunks)


def _changed(f: _File) -> WregError:
    return ErrorCode.FILE_CHANGED.error(f"{f.path} changed while being pushed; push again")


class _Uploader:
    """Workers that read, encode and send missing chunks, one reused read buffer each.

    Chunks waiting in the queue together go in one request (``Registry.put_chunks``), as
    many as fill the worker's read buffer of ``_BATCH_BYTES`` (and ``MAX_BATCH_CHUNKS``);
    the workers are as many as ``inflight_bytes`` has room for at that size. Once the
    registry shows it has no batched route, every chunk goes in a request of its own.
    """

    def __init__(
        self,
        registry: Registry,
        name: str,
        executor: Executor,
        progress: Progress,
        concurrency: int,
        budget: int,
        where: dict[str, _Source],
    ) -> None:
        self.registry, self.executor, self.progress = registry, executor, progress
        self.name = name  # the repository chunks are uploaded through
        self.where, self.budget = where, budget
        self.size = _buffers.buffer_size(max(CHUNK_MAX, _BATCH_BYTES))
        # Per chunk in flight: the read buffer and (at most about as big) its encoding.
        self.workers = _buffers.slots_for(budget, self.size, 2, concurrency)
        self.sent = 0
        self.unreported = 0  # raw bytes of the chunks sent before a phase reports them
        self.reporting = False

    def report(self, total: int, description: str = "uploading") -> None:
        """Start the phase of uploading ``total`` raw bytes, those sent so far included:
        it advances by them at once, then by each chunk as it is sent. Nothing to upload,
        no phase."""
        self.reporting = total > 0
        if self.reporting:
            self.progress.start(description, total)
            if self.unreported:
                self.progress.advance(self.unreported)
        self.unreported = 0

    def _small(self, digest: str) -> bool:
        """Whether ``digest`` may share a request (it fits a batch with room to spare)."""
        return self.registry.batches and self.where[digest].chunk.length < self.size // 2

    def _group(
        self, first: str, queue: asyncio.Queue[str | None]
    ) -> tuple[list[str], str | None, bool]:
        """``first`` and the small chunks queued right behind it that fit one batch; the
        chunk taken that does not fit (the caller sends it next), if any; and whether the
        end of the queue (``None``) was taken."""
        group = [first]
        used = self.where[first].chunk.length + FRAME_HEADER_SIZE
        while len(group) < MAX_BATCH_CHUNKS and not queue.empty():
            digest = queue.get_nowait()
            if digest is None:
                return group, None, True
            cost = self.where[digest].chunk.length + FRAME_HEADER_SIZE
            if not self._small(digest) or used + cost > self.size:
                return group, digest, False
            group.append(digest)
            used += cost
        return group, None, False

    async def run(self, queue: asyncio.Queue[str | None]) -> None:
        buf: bytearray | None = None
        try:
            pending: str | None = None
            done = False
            while True:
                if pending is not None:
                    digest, pending = pending, None
                else:
                    taken = None if done else await queue.get()
                    if taken is None:
                        break
                    digest = taken
                group = [digest]
                if self._small(digest):
                    group, pending, done = self._group(digest, queue)
                longest = max(self.where[d].chunk.length for d in group)
                need = max(longest, sum(self.where[d].chunk.length for d in group))
                if buf is None or len(buf) < need:
                    if buf is not None:
                        _buffers.give(buf, self.budget)
                    buf = _buffers.take(max(self.size, _buffers.buffer_size(need)))
                await self._send(group, buf)
        finally:
            if buf is not None:
                _buffers.give(buf, self.budget)

    async def _send(self, group: list[str], buf: bytearray) -> None:
        loop = asyncio.get_running_loop()
        sources = [self.where[d] for d in group]
        encoded = await loop.run_in_executor(self.executor, _read_encode_all, sources, buf)
        chunks = list(zip(group, encoded, strict=True))
        sent = False
        if len(chunks) > 1:
            from wreg._http import BatchesUnsupported

            try:
                await self.registry.put_chunks(self.name, chunks)
                sent = True
            except BatchesUnsupported:
                pass
        if not sent:
            for digest, data in chunks:
                await self.registry.put_chunk(self.name, digest, data)
        for source, data in zip(sources, encoded, strict=True):
            self.sent += len(data)
            if self.reporting:
                self.progress.advance(source.chunk.length)
            else:
                self.unreported += source.chunk.length


def _read_encode_all(sources: list[_Source], buf: bytearray) -> list[bytes]:
    """Read, check and encode each chunk of ``sources``, side by side in ``buf``."""
    out: list[bytes] = []
    at = 0
    for f, chunk in sources:
        out.append(_read_encode(f, chunk, memoryview(buf)[at:]))
        at += chunk.length
    return out


def _read_encode(f: _File, chunk: HashedChunk, buf: memoryview) -> bytes:
    offset, length, dtype, digest = chunk
    data = buf[:length]
    if f.content is not None:
        # Copied, then checked: what is checked is what is encoded, even if the caller
        # writes to its arrays meanwhile.
        data[:] = f.content.view(offset, length)
        n = length
    else:
        fd = os.open(f.path, os.O_RDONLY)
        try:
            n = os.preadv(fd, [data], offset)
        finally:
            os.close(fd)
    if n != length or digest_bytes(data) != digest:
        raise ErrorCode.DIGEST_MISMATCH.error(
            f"{f.path} changed while being pushed (chunk at {offset} no longer matches); "
            "push again",
        )
    from wreg.core.encoding import encode_chunk  # lazy: numpy + zstd start-up

    return encode_chunk(data, dtype)
