"""Stage 5, commit: check each assembled file, repair what a crash lost, rename it into
``blobs/``; then the snapshot, the tag's ref and ``-o DIR``.

A file is committed only as the inode that was verified, and its stat is recorded
(``NodeCache.commit_blob``). Chunks that fail their check are fetched again on the
pull's one fetch pool (``FetchPool``), like every other download.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from wreg import _buffers
from wreg._cache import NodeCache
from wreg._cache_ops import LinkMode, materialize
from wreg._pull.assembly import Context, Needs, Placement, Target, close
from wreg._pull.fetch import FetchPool
from wreg._pull.resolve import Resolved
from wreg.core.digest import Hasher, digest_bytes
from wreg.core.errors import ErrorCode
from wreg.core.manifest import FileEntry
from wreg.core.reference import Reference


async def finalize(ctx: Context, t: Target, pool: FetchPool) -> None:
    """Check the file; repair chunks that fail their own digest; commit the blob.

    Schema 2 (``FileEntry.built_from_chunks``): every chunk written by this run was
    verified on arrival (or seeded from a trusted blob, or hashed on the way from an
    untrusted one), so only the chunks resumed from an earlier run — which a crash may
    have lost — are read back. Schema 1: the whole file is read back for its digest.
    The bad chunks are queued on ``pool``; the file is checked again once they landed.
    """
    loop = asyncio.get_running_loop()
    bad: list[int] = []
    if t.entry.built_from_chunks:
        bad = await loop.run_in_executor(ctx.executor, bad_chunks, t, sorted(t.done))
        ok = not bad and os.fstat(t.fd).st_size == t.entry.size
    else:
        ok = await loop.run_in_executor(ctx.executor, verify_file, t)
    if not ok:
        if not bad:  # which chunks are wrong is not known yet: look at every one
            bad = await loop.run_in_executor(ctx.executor, bad_chunks, t, None)
        needs, sizes = repairs(t, bad)
        await pool.fetch(needs, sizes, lambda _t, _i: None, report=False)
        if not bad or not await loop.run_in_executor(ctx.executor, verified, t):
            ctx.cache.reset_partial(t.entry)
            raise ErrorCode.DIGEST_MISMATCH.error(
                f"{t.entry.path}: assembled file does not match its digest {t.entry.digest}"
            )
    try:
        ctx.cache.commit_blob(t.temp, t.entry, t.fd)
    finally:
        close(t)


def repairs(t: Target, bad: Sequence[int]) -> tuple[Needs, dict[str, int]]:
    """What to fetch again for the chunks ``bad`` (indices) of ``t``."""
    needs: Needs = {}
    sizes: dict[str, int] = {}
    chunks = list(t.entry.chunk_offsets())
    for index in bad:
        offset, chunk = chunks[index]
        needs.setdefault(chunk.digest, []).append(Placement(t, offset, index))
        sizes[chunk.digest] = chunk.size
    return needs, sizes


def verified(t: Target) -> bool:
    """After a repair: every chunk matches (schema 2), or the whole file does (schema 1)."""
    if t.entry.built_from_chunks:
        return not bad_chunks(t, None) and os.fstat(t.fd).st_size == t.entry.size
    return verify_file(t)


def verify_file(t: Target) -> bool:
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


def bad_chunks(t: Target, among: list[int] | None) -> list[int]:
    """Indices of the chunks (of ``among``, default all) whose bytes in the temp file do
    not match their digest."""
    chunks = list(t.entry.chunk_offsets())
    return [
        index
        for index in (range(len(chunks)) if among is None else among)
        if digest_bytes(os.pread(t.fd, chunks[index][1].size, chunks[index][0]))
        != chunks[index][1].digest
    ]


def publish(
    cache: NodeCache,
    ref: Reference,
    resolved: Resolved,
    selected: Sequence[FileEntry],
    dest: Path | None,
    *,
    online: bool,
    force: bool,
    link: LinkMode,
) -> Path:
    """The snapshot of ``selected`` (named by the verified manifest digest), the tag's
    ref when online, and ``dest`` filled; returns where the files are."""
    snapshot = cache.build_snapshot(ref.name, resolved.manifest, selected, digest=resolved.digest)
    cache.touch_snapshot(ref.name, resolved.digest)
    if ref.tag is not None and online:
        cache.write_ref(ref.name, ref.tag, resolved.digest)
    if dest is None:
        return snapshot
    materialize(cache, selected, dest, force=force, link=link)
    return dest
