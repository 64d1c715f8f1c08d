"""Pull, in the order its data flows (one module per stage):

1. ``resolve``  the manifest, verified against its digest (which travels on from here),
                the files selected, and the room they need.
2. ``plan``     pure: per file, the chunks resumed from an interrupted pull; per chunk,
                every place it goes and whether it is seeded from a cached blob or
                fetched. Each distinct chunk is obtained once per pull, however many
                files hold it.
3. ``assembly`` the files being assembled in ``tmp/<hex>.part`` (they grow as verified
                chunks land), their descriptors and ``tmp/<hex>.progress`` records.
4. ``seed``     chunks copied from cached blobs (``copy_file_range``), then
   ``fetch``    the rest downloaded, decoded, verified and ``pwrite``\\ n by the pull's one
                bounded pool of fetch threads; repairs are queued on the same pool.
5. ``commit``   each file checked (resumed chunks re-read), repaired, renamed into
                ``blobs/`` as the inode verified; the snapshot, the ref and ``-o DIR``.

Memory is bounded: at most ``inflight_bytes`` of chunk buffers exist, allocated once and
reused (``wreg._buffers``), and the number of chunks in flight follows from it.

Resume: a pull killed at any point and run again keeps the chunks its progress records
list and fetches only the rest (``assembly``).

One download per node: a file is assembled only by the process holding its lock
(``locks/file-<hex>.lock``); another process that needs the same file waits for it and
then uses the blob. The pull of a manifest holds ``locks/snapshot-<hex>.lock``, which
also tells ``wreg cache prune`` that the snapshot is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from wreg._cache import POLL_SECONDS, NodeCache, acquire
from wreg._cache_ops import LinkMode
from wreg._progress import Progress
from wreg._pull import plan as planning
from wreg._pull.assembly import (
    Context,
    Needs,
    Placement,
    Stats,
    Target,
    close,
    flush,
    flush_periodically,
    open_target,
    sync_all,
)
from wreg._pull.commit import finalize, publish
from wreg._pull.fetch import FetchPool
from wreg._pull.resolve import (
    Resolved,
    check_room,
    resolve,
    resolve_cached,
    resolve_for,
    select_files,
)
from wreg._pull.seed import seed, seed_batches
from wreg._results import PullResult
from wreg.core.errors import ErrorCode, ErrorKind, WregError
from wreg.core.manifest import FileEntry
from wreg.core.reference import Reference

if TYPE_CHECKING:
    from wreg._http import Registry

__all__ = [
    "Hooks",
    "Obtain",
    "Picks",
    "Resolved",
    "check_room",
    "download",
    "pull",
    "resolve",
    "resolve_cached",
    "resolve_for",
    "select_files",
]


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
    resolved = await resolve_for(registry, cache, ref)
    selected = select_files(resolved.manifest, include, exclude)
    check_room(cache, ref, selected, dest, max_total)
    total = sum(e.size for e in selected)
    stats = Stats()
    snapshot_lock = cache.snapshot_lock(resolved.digest)
    await acquire(snapshot_lock)
    try:
        for _round in range(3):  # a prune racing with us can remove a blob we counted on
            present = {e.digest for e in selected if cache.has_blob(e) or cache.adopt_blob(e)}
            todo = planning.missing(selected, present)
            if not todo:
                break
            if registry is None:
                names = ", ".join(e.path for e in todo[:3]) + (", ..." if len(todo) > 3 else "")
                raise ErrorCode.SNAPSHOT_INCOMPLETE.error(
                    f"offline: {ref} ({resolved.digest}) is incomplete in the node cache: "
                    f"{len(todo)} of {len(selected)} files missing ({names}); "
                    "pull it once while online",
                )
            ctx = Context(
                registry, ref.name, cache, executor, progress, concurrency, inflight_bytes, stats
            )
            progress.start("downloading", sum(e.size for e in todo))
            await download(ctx, todo)
        out = publish(
            cache,
            ref,
            resolved,
            selected,
            dest,
            online=registry is not None,
            force=force,
            link=link,
        )
    finally:
        snapshot_lock.release()
    return PullResult(
        reference=str(ref),
        manifest=resolved.digest,
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


class Hooks(Protocol):
    """How a caller (the tensor loader) takes part in assembling files: it picks which
    chunks to obtain (possibly obtaining some first, to read a header), and hears of
    each chunk as it is written and verified."""

    async def choose(self, targets: list[Target], obtain: Obtain) -> Picks | None:
        """The chunks to obtain for ``targets`` (None: all of them, the files complete)."""
        ...

    def landed(self, t: Target, index: int) -> None:
        """Chunk ``index`` of ``t`` is written and verified (on the event loop)."""
        ...

    def order(self, needs: Needs) -> Needs:
        """The chunks to obtain in the order to fetch them (default: manifest order)."""
        ...


# Chunk indices to obtain, by position in the target list.
Picks = Mapping[int, Collection[int]]
# Obtain (seed or fetch) some chunks of the targets being assembled; None means all.
Obtain = Callable[[Picks | None], Awaitable[None]]


async def download(ctx: Context, todo: list[FileEntry], hooks: Hooks | None = None) -> None:
    """Make every file of ``todo`` a blob, assembling those no other process is working on
    and waiting for the others; a permanent failure or a full disk leaves none of their
    partial files. With ``hooks`` choosing only some chunks, the files are left partial
    (their progress records list what landed, for a later pull to resume)."""
    pending = todo
    while pending:
        mine: list[Target] = []
        busy: list[FileEntry] = []
        for entry in pending:
            lock = ctx.cache.file_lock(entry.digest)
            if not await acquire(lock, wait=False):
                busy.append(entry)
            elif ctx.cache.has_blob(entry):  # finished by another process meanwhile
                lock.release()
                ctx.progress.advance(entry.size)
            else:
                mine.append(Target(entry, ctx.cache.temp_path(entry.digest), lock))
        try:
            if mine:
                await _assemble(ctx, mine, hooks)
        except (WregError, OSError) as exc:
            permanent = exc.code.kind in _PERMANENT if isinstance(exc, WregError) else False
            if permanent or (isinstance(exc, OSError) and exc.errno in _NO_ROOM):
                for t in mine:  # another run would fail the same way, or the disk is full
                    close(t)
                    ctx.cache.reset_partial(t.entry)
            raise
        finally:
            for t in mine:
                close(t)
                t.lock.release()
        pending = []
        for entry in busy:
            if ctx.cache.has_blob(entry):
                ctx.progress.advance(entry.size)
            else:
                pending.append(entry)
        if pending and not mine:
            await asyncio.sleep(POLL_SECONDS)


async def _assemble(ctx: Context, targets: list[Target], hooks: Hooks | None = None) -> None:
    """Assemble the (locked) ``targets``: open them, plan, seed, fetch; each is committed
    as soon as its last chunk is written."""
    loop = asyncio.get_running_loop()
    for t in targets:
        open_target(ctx.cache, t)
        t.remaining = len(t.entry.chunks) - len(t.done)
        if t.done:
            resumed = sum(c.size for i, c in enumerate(t.entry.chunks) if i in t.done)
            ctx.stats.resumed += resumed
            ctx.progress.advance(resumed)
    entries = [t.entry for t in targets]
    # Repairs may need any chunk of these files, resumed ones included.
    pool = FetchPool(ctx, max((c.size for e in entries for c in e.chunks), default=1))
    finals: list[asyncio.Future[None]] = []

    def written(t: Target, index: int) -> None:
        t.marks.append(index)
        t.landed.add(index)
        t.remaining -= 1
        if hooks is not None:
            hooks.landed(t, index)
        if t.remaining == 0:
            finals.append(asyncio.ensure_future(finalize(ctx, t, pool)))

    async def obtain(picks: Picks | None) -> None:
        have = {t.entry.digest: t.done | t.landed for t in targets}
        only = None
        if picks is not None:
            only = {targets[i].entry.digest: picks[i] for i in picks}
        located = ctx.cache.locate_chunks(planning.pending_chunks(entries, have, only))
        plan = planning.plan(entries, have, located, only)
        needs: Needs = {
            digest: [Placement(targets[p.file], p.offset, p.chunk_index) for p in places]
            for digest, places in plan.places.items()
        }
        if hooks is not None:
            needs = hooks.order(needs)
        for batch in seed_batches(plan.seeds, needs):
            copied = await loop.run_in_executor(ctx.executor, seed, batch)
            for digest in copied:
                for t, _offset, index in needs.pop(digest):
                    ctx.progress.advance(plan.sizes[digest])
                    written(t, index)
        await pool.fetch(needs, plan.sizes, written)

    flusher = asyncio.ensure_future(flush_periodically(ctx, targets))
    try:
        # The hooks choose first: a file complete from the start is committed (and its
        # descriptor closed) only after they have looked at it.
        complete = [t for t in targets if t.remaining == 0]
        picks = None if hooks is None else await hooks.choose(targets, obtain)
        for t in complete:
            finals.append(asyncio.ensure_future(finalize(ctx, t, pool)))
        await obtain(picks)
        await asyncio.gather(*finals)
        partial = [t for t in targets if t.remaining > 0 and t.marks]
        if partial:  # a selective load: what landed is recorded, durably, for a later pull
            await loop.run_in_executor(ctx.executor, sync_all, [t.fd for t in partial])
            flush(partial, sync=True)
    except BaseException:
        for task in finals:
            task.cancel()
        await asyncio.gather(*finals, return_exceptions=True)
        with contextlib.suppress(OSError):
            flush(targets)
        raise
    finally:
        await pool.close()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
