"""Whole files into chunks, server side: what the HF mirror fetched and HF clients uploaded.

A file the server received whole (spooled to a temporary file under the data directory,
never held in memory) is cut exactly as ``wreg push`` cuts it (``wreg.core.chunking``:
tensor-aligned for safetensors, content-defined otherwise), encoded with the same
float-aware codec, and stored through ``chunks.upload_many`` — claimed for the
repository, deduplicated against everything stored (not decoded again: the digests were
computed here, from the bytes themselves). So a model mirrored from a hub and
the same model pushed with ``wreg push`` share every chunk.

The file is read once, in order: each batch of chunks is hashed, encoded and uploaded,
and the whole file's sha256 is computed on the way (``Ingested.sha256``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.chunking import ChunkSpec, plan_file
from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.manifest import ChunkRef
from wreg_server.domain import chunks
from wreg_server.objectstore import ObjectStore

BATCH_BYTES: Final = 32 << 20
"""Raw bytes read, encoded and uploaded per step (bounds the memory an ingest holds)."""


@dataclass(frozen=True, slots=True)
class Ingested:
    """A file's chunks, in order, and the sha256 of its content."""

    chunks: tuple[ChunkRef, ...]
    sha256: str
    size: int


def _batches(specs: list[ChunkSpec]) -> list[list[ChunkSpec]]:
    out: list[list[ChunkSpec]] = []
    size = 0
    for spec in specs:
        if not out or size + spec.length > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(spec)
        size += spec.length
    return out


def _encode(fd: int, batch: list[ChunkSpec], sha: hashlib._Hash) -> list[tuple[str, bytes, int]]:
    """Read, hash and encode one batch (worker thread): (digest, encoded, raw size)."""
    out = []
    for spec in batch:
        data = os.pread(fd, spec.length, spec.offset)
        if len(data) != spec.length:
            raise OSError(f"short read at {spec.offset}: the spooled file changed")
        sha.update(data)
        out.append((digest_bytes(data), encode_chunk(data, spec.dtype), spec.length))
    return out


async def ingest(
    session: AsyncSession, store: ObjectStore, path: Path, *, through: str, max_raw: int
) -> Ingested:
    """Chunk, encode and store the file at ``path`` for repository ``through``."""
    specs = await to_thread.run_sync(plan_file, path)
    sha = hashlib.sha256()
    refs: list[ChunkRef] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for batch in _batches(specs):
            encoded = await to_thread.run_sync(_encode, fd, batch, sha)
            items = [(digest, memoryview(data)) for digest, data, _ in encoded]
            await chunks.upload_many(
                session, store, items, max_raw=max_raw, through=through, encoded_here=True
            )
            refs.extend(ChunkRef(digest, size) for digest, _, size in encoded)
    finally:
        os.close(fd)
    return Ingested(tuple(refs), sha.hexdigest(), sum(r.size for r in refs))
