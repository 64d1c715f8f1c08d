"""Files out of chunks: a byte range of one manifest file, decoded and verified on the way.

What serves whole files rather than chunks (the Hugging Face API's ``resolve``, the
sha256 a file is advertised with) reads them here. A file is never assembled in memory
or on disk: the chunks overlapping the range are read from the object store in order,
each decoded into its own buffer and checked against its digest before a byte of it is
yielded, with at most ``PREFETCH`` chunks read ahead. Memory is thus bounded by
``(PREFETCH + 1) * MAX_CHUNK_RAW`` per reader however large the file.

A chunk the store lost, or whose bytes no longer match their digest, ends the stream
with ``FileUnreadable``: the response has by then promised a length it cannot deliver,
so the server closes the connection and the client sees a short read, never wrong bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

from anyio import to_thread

from wreg.core.encoding import decode_chunk_into, encoded_raw_length
from wreg.core.errors import WregError
from wreg.core.manifest import ChunkRef, FileEntry
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

PREFETCH: Final = 2
"""Chunks read and decoded ahead of the one being sent."""


class FileUnreadable(Exception):
    """A chunk of the file is missing from the store or does not match its digest."""


def _decode(encoded: bytes, chunk: ChunkRef) -> bytearray:
    """Decode and verify one chunk (worker thread)."""
    if encoded_raw_length(encoded) != chunk.size:
        raise FileUnreadable(f"chunk {chunk.digest} decodes to the wrong length")
    out = bytearray(chunk.size)
    try:
        decode_chunk_into(encoded, memoryview(out), chunk.digest)
    except WregError as exc:
        raise FileUnreadable(f"chunk {chunk.digest}: {exc.message}") from None
    return out


async def _load(store: ObjectStore, chunk: ChunkRef) -> bytearray:
    try:
        encoded = await store.get(chunk_key(chunk.digest))
    except ObjectNotFound:
        log.error("chunk %s is referenced by a manifest but not in the object store", chunk.digest)
        raise FileUnreadable(f"chunk {chunk.digest} is missing from the object store") from None
    return await to_thread.run_sync(_decode, encoded, chunk)


def overlapping(entry: FileEntry, start: int, stop: int) -> list[tuple[int, ChunkRef]]:
    """The (offset, chunk) pairs of ``entry`` that overlap bytes ``[start, stop)``."""
    return [(at, c) for at, c in entry.chunk_offsets() if at < stop and at + c.size > start]


async def read_range(
    store: ObjectStore, entry: FileEntry, start: int = 0, stop: int | None = None
) -> AsyncIterator[memoryview]:
    """Bytes ``[start, stop)`` of ``entry`` (default: all of it), in order, verified."""
    stop = entry.size if stop is None else min(stop, entry.size)
    if start >= stop:
        return
    todo = deque(overlapping(entry, start, stop))
    pending: deque[tuple[int, asyncio.Task[bytearray]]] = deque()
    try:
        while todo or pending:
            while todo and len(pending) <= PREFETCH:
                at, chunk = todo.popleft()
                pending.append((at, asyncio.ensure_future(_load(store, chunk))))
            at, task = pending.popleft()
            raw = memoryview(await task)
            yield raw[max(start - at, 0) : min(stop - at, len(raw))]
    finally:
        for _, task in pending:
            task.cancel()


async def sha256_of(store: ObjectStore, entry: FileEntry) -> str:
    """The hex sha256 of the whole file, read once through ``read_range``."""
    digest = hashlib.sha256()
    async for piece in read_range(store, entry):
        # hashlib releases the GIL on large inputs: hash in a worker thread.
        await to_thread.run_sync(digest.update, piece)
    return digest.hexdigest()
