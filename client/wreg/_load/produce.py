"""The producer side of a load: which tensors are ready, from which file, as chunks land.

A load is a pull that hears of every chunk as it is written (``wreg._pull.Hooks``):

1. resolve the manifest (verified), select its files, hold the snapshot lock;
2. a file the node cache holds whole: its header is read from the blob and every
   wanted tensor is ready at once;
3. the others are assembled in ``tmp/`` by the pull's own machinery. The loader first
   obtains the chunks holding each file's header (two rounds at most: the 8-byte length,
   then the rest), parses it, chooses the tensors (``select``), and then obtains only
   their chunks, or every chunk for a full load. A tensor is ready the moment the last
   chunk it overlaps is written and verified; chunks an interrupted pull left behind are
   re-hashed before a tensor uses them;
4. a full load completes the files (blobs, snapshot, ref: the next start is warm); a
   selective one leaves them partial with their progress records, which a later pull
   resumes from.

``Ready`` items go to ``emit`` on the event loop; the consumer reads each tensor's bytes
through the ``Source`` descriptor (``materialize``), which stays open until the load is
closed, so the download never waits for the consumer and holds no tensor in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wreg._cache import NodeCache, acquire
from wreg._load import header as headers
from wreg._load.select import Selection, Want, choose, chunk_span, chunk_starts
from wreg._progress import Progress
from wreg._pull import Obtain, Picks, check_room, download, resolve_for, select_files
from wreg._pull import plan as planning
from wreg._pull.assembly import Context, Needs, Placement, Stats, Target
from wreg._pull.commit import bad_chunks, publish
from wreg.core.errors import ErrorCode
from wreg.core.manifest import FileEntry
from wreg.core.reference import Reference

if TYPE_CHECKING:
    from wreg._http import Registry


@dataclass(slots=True, eq=False)
class Source:
    """A file tensors are read from: a descriptor owned by the load (a cached blob, or a
    file being assembled, whose written chunks nobody else can change)."""

    entry: FileEntry
    fd: int
    header: headers.Header | None = None  # once parsed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


@dataclass(frozen=True, slots=True)
class Ready:
    """A tensor (or the rows of it a load asked for) whose bytes are all verified."""

    want: Want
    source: Source


@dataclass(slots=True)
class LoadStats:
    """What a load read and fetched (bytes)."""

    files: int = 0  # safetensors files read
    tensors: int = 0  # tensors yielded
    bytes_model: int = 0  # every file of the model (after include/exclude)
    bytes_tensors: int = 0  # the selected tensor bytes
    bytes_downloaded: int = 0  # on the wire (encoded)
    bytes_fetched: int = 0  # raw bytes of the chunks downloaded
    bytes_from_cache: int = 0  # raw bytes of selected tensors found in the node cache
    chunks_downloaded: int = 0
    manifest: str = ""

    def to_json(self) -> dict[str, int | str]:
        return {
            "manifest": self.manifest,
            "files": self.files,
            "tensors": self.tensors,
            "bytes_model": self.bytes_model,
            "bytes_tensors": self.bytes_tensors,
            "bytes_downloaded": self.bytes_downloaded,
            "bytes_fetched": self.bytes_fetched,
            "bytes_from_cache": self.bytes_from_cache,
            "chunks_downloaded": self.chunks_downloaded,
        }


Emit = Callable[[Ready], None]


@dataclass(slots=True, eq=False)
class _File:
    """A safetensors file being loaded: its source, header, and the tensors not yet ready."""

    source: Source
    starts: list[int]
    header: headers.Header | None = None
    present: set[int] = field(default_factory=set)  # chunk indices written and verified
    waiting: dict[int, list[_Pending]] = field(default_factory=dict)  # chunk -> tensors


@dataclass(slots=True, eq=False)
class _Pending:
    """A tensor waiting for ``left`` more chunks."""

    want: Want
    left: int


class Loader:
    """The ``Hooks`` of a load's pull, and the tensors found in cached blobs."""

    def __init__(
        self,
        cache: NodeCache,
        selection: Selection,
        emit: Emit,
        stats: LoadStats,
        sources: list[Source],
    ) -> None:
        self._cache = cache
        self._selection = selection
        self._emit = emit
        self._stats = stats
        self._files: dict[str, _File] = {}  # file digest -> state
        self._names: dict[str, str] = {}  # tensor name -> the file path holding it
        # (file digest, chunk index) -> fetch rank: the chunks of small tensors first
        self._priority: dict[tuple[str, int], int] = {}
        self.sources = sources  # every descriptor opened: the load closes them
        self.served: set[str] = set()  # file digests whose tensors were all handed out

    # -- files the node cache holds ----------------------------------------------------

    def from_blob(self, entry: FileEntry) -> bool:
        """Hand out the wanted tensors of a cached blob; False if it is not (any longer)
        a trusted blob."""
        fd = self._cache.open_blob(entry)
        if fd is None:
            return False
        source = self._source(entry, fd)
        head = os.pread(fd, headers.PREFIX, 0)
        length = headers.header_length(head, entry.size, entry.path)
        source.header = headers.parse(_pread_all(fd, length, 0), entry.size, entry.path)
        self._ready_all(source, source.header, from_cache=True)
        return True

    def _source(self, entry: FileEntry, fd: int) -> Source:
        source = Source(entry, fd)
        self.sources.append(source)
        self._stats.files += 1
        return source

    def _ready_all(self, source: Source, header: headers.Header, from_cache: bool) -> None:
        for want in self._wants(source.entry, header):
            if from_cache:
                self._stats.bytes_from_cache += want.nbytes
            self._emit(Ready(want, source))
        self.served.add(source.entry.digest)

    def _wants(self, entry: FileEntry, header: headers.Header) -> list[Want]:
        wants = choose(header, self._selection)
        for want in wants:
            name = want.info.name
            if name in self._names:
                raise ErrorCode.TENSORS_INVALID.error(
                    f"tensor {name!r} is in both {self._names[name]} and {entry.path}",
                    detail={"tensor": name},
                )
            self._names[name] = entry.path
            self._stats.bytes_tensors += want.nbytes
        return wants

    @property
    def matched(self) -> int:
        return len(self._names)

    # -- files being assembled (Hooks) -------------------------------------------------

    async def choose(self, targets: list[Target], obtain: Obtain) -> Picks | None:
        loop = asyncio.get_running_loop()
        mine: dict[int, _File] = {}
        for i, t in enumerate(targets):
            if t.entry.path.endswith(".safetensors") and t.entry.chunks:
                state = _File(self._source(t.entry, os.dup(t.fd)), chunk_starts(t.entry))
                self._files[t.entry.digest] = state
                mine[i] = state
        # The header: its 8-byte length first, then the chunks holding the rest of it.
        for span in (lambda _s: headers.PREFIX, self._header_length):
            picks: dict[int, set[int]] = {}
            for i, state in mine.items():
                if state.header is None:
                    end = min(span(state), state.source.entry.size)
                    picks[i] = set(chunk_span(state.source.entry, 0, end, state.starts))
            await self._obtain(targets, picks, obtain)
        for state in mine.values():
            entry = state.source.entry
            length = self._header_length(state)
            head = await loop.run_in_executor(None, _pread_all, state.source.fd, length, 0)
            state.header = state.source.header = headers.parse(head, entry.size, entry.path)
        wanted: dict[int, set[int]] = {}
        spans: list[tuple[int, int, str, range]] = []  # (chunks, begin, file, chunk span)
        for i, state in mine.items():
            assert state.header is not None  # noqa: S101 - narrows: parsed just above
            wanted[i] = set()
            for want in self._wants(state.source.entry, state.header):
                chunks = chunk_span(state.source.entry, want.begin, want.end, state.starts)
                spans.append((len(chunks), want.begin, state.source.entry.digest, chunks))
                wanted[i].update(chunks)
                missing = [c for c in chunks if c not in state.present]
                if not missing:
                    self._emit(Ready(want, state.source))
                    continue
                pending = _Pending(want, len(missing))
                for c in missing:
                    state.waiting.setdefault(c, []).append(pending)
        # Fetch order: the tensors needing the fewest chunks first, so the first tensors
        # are ready at once and the largest arrive last (the total is the same).
        for rank, (_n, _begin, file_digest, chunks) in enumerate(sorted(spans)):
            for c in chunks:
                self._priority.setdefault((file_digest, c), rank)
        if self._selection.everything:
            everything = {i: set(range(len(t.entry.chunks))) for i, t in enumerate(targets)}
            await self._verify_resumed(targets, everything)
            return None
        await self._verify_resumed(targets, wanted)
        return wanted

    def _header_length(self, state: _File) -> int:
        entry = state.source.entry
        prefix = os.pread(state.source.fd, headers.PREFIX, 0)
        return headers.header_length(prefix, entry.size, entry.path)

    async def _obtain(
        self, targets: list[Target], picks: dict[int, set[int]], obtain: Obtain
    ) -> None:
        """Obtain ``picks`` (chunks resumed from an earlier run are re-hashed first)."""
        picks = {i: p for i, p in picks.items() if p}
        if not picks:
            return
        await self._verify_resumed(targets, picks)
        await obtain(picks)

    async def _verify_resumed(self, targets: list[Target], picks: Picks) -> None:
        """Re-hash the chunks of ``picks`` an interrupted pull left behind; the bad ones
        are dropped from the resumed set, to be obtained again."""
        loop = asyncio.get_running_loop()
        for i, indices in picks.items():
            t = targets[i]
            state = self._files.get(t.entry.digest)
            if state is None:  # not a tensor file: the commit checks its resumed chunks
                continue
            todo = sorted(c for c in indices if c in t.done and c not in state.present)
            if not todo:
                continue
            bad = set(await loop.run_in_executor(None, bad_chunks, t, todo))
            for c in bad:
                t.done.discard(c)
                t.remaining += 1
            for c in todo:
                if c not in bad:
                    self._present(state, c)

    def order(self, needs: Needs) -> Needs:
        last = len(self._priority)

        def key(item: tuple[str, list[Placement]]) -> int:
            return min(
                self._priority.get((p.target.entry.digest, p.chunk_index), last) for p in item[1]
            )

        return dict(sorted(needs.items(), key=key))

    def landed(self, t: Target, index: int) -> None:
        state = self._files.get(t.entry.digest)
        if state is not None:
            self._present(state, index)

    def _present(self, state: _File, index: int) -> None:
        state.present.add(index)
        for pending in state.waiting.pop(index, ()):
            pending.left -= 1
            if pending.left == 0:
                self._emit(Ready(pending.want, state.source))

    def assembled(self) -> set[str]:
        """The files whose tensors were handed out from their assembly."""
        return {d for d, s in self._files.items() if s.header is not None and not s.waiting}


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    parts = []
    while n > 0:
        piece = os.pread(fd, n, offset)
        if not piece:
            raise ErrorCode.TENSORS_INVALID.error(f"file ends at {offset}, {n} bytes short")
        parts.append(piece)
        n -= len(piece)
        offset += len(piece)
    return b"".join(parts)


async def produce(
    registry: Registry | None,
    cache: NodeCache,
    ref: Reference,
    selection: Selection,
    executor: Executor,
    progress: Progress,
    concurrency: int,
    inflight_bytes: int,
    emit: Emit,
    stats: LoadStats,
    sources: list[Source],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> None:
    """Run a load: ``emit`` every wanted tensor as it becomes ready (see the module
    docstring). Every descriptor opened is appended to ``sources``, for the caller to
    close once the consumer is done with them."""
    resolved = await resolve_for(registry, cache, ref)
    stats.manifest = resolved.digest
    selected = select_files(resolved.manifest, include, exclude)
    stats.bytes_model = sum(e.size for e in selected)
    tensor_files = [e for e in selected if e.path.endswith(".safetensors")]
    if not tensor_files:
        raise ErrorCode.TENSORS_UNSUPPORTED.error(
            f"{ref} has no .safetensors file to load tensors from"
            + (" among the files selected" if include or exclude else ""),
        )
    full = selection.everything
    wanted_files = selected if full else tensor_files
    check_room(cache, ref, wanted_files, None, None)
    loader = Loader(cache, selection, emit, stats, sources)
    snapshot_lock = cache.snapshot_lock(resolved.digest)
    await acquire(snapshot_lock)
    try:
        present = {e.digest for e in wanted_files if cache.has_blob(e) or cache.adopt_blob(e)}
        for entry in tensor_files:
            cached = entry.digest in present and entry.digest not in loader.served
            if cached and not loader.from_blob(entry):
                present.discard(entry.digest)
        todo = planning.missing(wanted_files, present | loader.served)
        if todo:
            if registry is None:
                raise ErrorCode.SNAPSHOT_INCOMPLETE.error(
                    f"offline: {ref} ({resolved.digest}) is not in the node cache whole; "
                    "load it once while online",
                )
            ctx = Context(
                registry, ref.name, cache, executor, progress, concurrency, inflight_bytes, Stats()
            )
            progress.start("loading", sum(e.size for e in todo))
            await download(ctx, todo, loader)
            stats.bytes_downloaded += ctx.stats.received
            stats.bytes_fetched += ctx.stats.fetched_raw
            stats.chunks_downloaded += ctx.stats.chunks
        done = loader.served | loader.assembled()
        for entry in tensor_files:
            # Assembled by another process meanwhile: read from the blob it committed.
            if entry.digest not in done and not loader.from_blob(entry):
                raise ErrorCode.SNAPSHOT_INCOMPLETE.error(
                    f"{entry.path} is not in the node cache after the load; load again"
                )
        if selection.tensors is not None and loader.matched == 0:
            raise ErrorCode.SELECTION_INVALID.error(
                f"no tensor of {ref} matches tensors={list(selection.tensors)}"
            )
        if full:
            publish(
                cache,
                ref,
                resolved,
                selected,
                None,
                online=registry is not None,
                force=False,
                link="hardlink",
            )
    finally:
        snapshot_lock.release()
