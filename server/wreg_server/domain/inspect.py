"""Describe a manifest's model files from their headers: what ``wreg inspect`` shows.

``describe(session, store, name, reference)`` resolves the manifest, then for every
safetensors and GGUF file reads only its header chunk(s) from the object store, each
decoded and checked against its digest (``domain/files.py``), and parses the header with
the format's one strict parser (``wreg.core.tensors``). Every tensor gets its tensor
digest (defined in ``wreg.core.tensors``): from the manifest's chunk digests alone for a
tensor made of whole chunks; for a tensor packed into a chunk with others, from its own
bytes, read from that packed chunk here — at most :data:`MAX_PACKED_BYTES` of such
chunks per file, so a file chunked without regard to its tensors costs a bounded read
(its tensors past the bound get ``digest: null``).

Bounds: a header is read in growing steps of whole chunks up to
``wreg.core.tensors.MAX_DESCRIBED_HEADER``; a header that does not parse, is too large,
or declares tensors outside the file is that file's ``error`` (one line), never a 500.
A chunk the store lost is ``FileUnreadable``: the file's ``error`` too, not cached.

Descriptions depend only on a file's chunk list, so they are cached by its identity (in
manifest schema 2 the file's ``digest``) in a bounded LRU
(:class:`DescribeCache`, by estimated bytes), shared by every caller in the process.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core.digest import digest_bytes
from wreg.core.errors import WregError
from wreg.core.manifest import FileEntry, Manifest, identity_of
from wreg.core.tensors import (
    MAX_DESCRIBED_HEADER,
    FileDescription,
    Format,
    Layout,
    ManifestDescription,
    NeedMoreBytes,
    TensorEntry,
    format_of,
    parse_layout,
    tensor_digest,
    tensor_pieces,
)
from wreg_server.domain import manifests
from wreg_server.domain.files import FileUnreadable, read_range
from wreg_server.objectstore import ObjectStore

__all__ = [
    "DEFAULT_CACHE",
    "MAX_PACKED_BYTES",
    "DescribeCache",
    "FileFacts",
    "describe",
    "describe_file",
]

MAX_PACKED_BYTES: Final = 64 << 20
"""Bytes of shared (packed) chunks read per file to digest the tensors inside them."""

FIRST_READ: Final = 8
"""Bytes asked for first (a safetensors prefix): the whole first chunk comes along, which
for a file wreg chunked is exactly the header."""

CACHE_BYTES: Final = 64 << 20


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a file's bytes determine (a description less its path)."""

    format: Format | None
    metadata: dict[str, Any]
    parameters: int
    tensors: tuple[TensorEntry, ...]
    error: str | None

    def at(self, entry: FileEntry) -> FileDescription:
        return FileDescription(
            entry.path,
            entry.size,
            entry.digest,
            self.format,
            self.metadata,
            self.parameters,
            self.tensors,
            self.error,
        )


class DescribeCache:
    """File descriptions by file identity, least recently used first out, at most
    ``max_bytes`` of (estimated) JSON. Thread- and task-safe."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[int, FileFacts]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> FileFacts | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def put(self, digest: str, described: FileFacts) -> None:
        cost = _cost(described)
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self._bytes -= old[0]
            self._entries[digest] = (cost, described)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                _, (evicted, _d) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


DEFAULT_CACHE: Final = DescribeCache()


def _cost(described: FileFacts) -> int:
    """Roughly the bytes the entry holds: its JSON, estimated per tensor."""
    meta = len(json.dumps(described.metadata, separators=(",", ":")))
    return 256 + meta + sum(160 + len(t.name) for t in described.tensors)


async def describe(
    session: AsyncSession,
    store: ObjectStore,
    name: str,
    reference: str,
    *,
    cache: DescribeCache | None = None,
) -> dict[str, Any]:
    """The description of manifest ``reference`` (a tag or a digest) of repository
    ``name``, as JSON-able values (the shape of ``GET .../inspect/{reference}``)::

        {"name", "digest", "created_at", "pushed_by", "metadata",
         "files": [{"path", "size", "digest", "format", "metadata", "parameters",
                    "tensors": [{"name", "dtype", "shape", "offset", "nbytes",
                                 "parameters", "digest"}], ["error"]}],
         "totals": {"files", "bytes", "tensors", "parameters"}}

    ``name`` and ``reference`` must be valid (the guard validates path parameters);
    raises ``NotFound`` (``NAME_UNKNOWN``, ``TAG_UNKNOWN``, ``MANIFEST_UNKNOWN``) as
    ``manifests.resolve`` does. Reads only header chunks and packed chunks of tensor
    files; ``cache`` defaults to the process-wide :data:`DEFAULT_CACHE`.
    """
    found = await manifests.resolve(session, name, reference)
    manifest = await to_thread.run_sync(Manifest.from_json_bytes, found.body)
    cache = DEFAULT_CACHE if cache is None else cache
    files = [await describe_file(store, entry, cache) for entry in manifest.files]
    return ManifestDescription(
        name,
        found.digest,
        found.created_at.isoformat() if found.created_at is not None else None,
        found.pushed_by,
        dict(manifest.metadata),
        tuple(files),
    ).to_json()


async def describe_file(
    store: ObjectStore, entry: FileEntry, cache: DescribeCache | None = None
) -> FileDescription:
    """One file's description (cached by its identity)."""
    cache = DEFAULT_CACHE if cache is None else cache
    fmt = format_of(entry.path)
    if fmt is None:
        return FileDescription(entry.path, entry.size, entry.digest, None, {}, 0, ())
    # The chunk list's identity (schema 2: the file's digest): tensor digests depend on
    # the cut, so a schema-1 file's content digest alone would not key them.
    key = identity_of(entry.chunks)
    described = cache.get(key)
    if described is None:
        try:
            described = await _describe(store, entry, fmt)
        except FileUnreadable as exc:  # the store's fault, not the file's: not cached
            return FileFacts(fmt, {}, 0, (), f"unreadable: {exc}").at(entry)
        cache.put(key, described)
    return described.at(entry)


async def _describe(store: ObjectStore, entry: FileEntry, fmt: Format) -> FileFacts:
    head = _Head(store, entry)
    want = min(FIRST_READ, entry.size)
    while True:
        await head.read_to(want)
        try:
            layout = await to_thread.run_sync(
                parse_layout, fmt, bytes(head.data), entry.size, entry.path
            )
            break
        except NeedMoreBytes as more:
            if len(head.data) >= entry.size:  # the parser asked past the file: a bug there
                return FileFacts(fmt, {}, 0, (), f"{entry.path}: header runs past the file")
            want = min(max(more.needed, 2 * len(head.data)), entry.size, MAX_DESCRIBED_HEADER)
            if want <= len(head.data):
                return FileFacts(
                    fmt, {}, 0, (), f"{entry.path}: header larger than {MAX_DESCRIBED_HEADER} bytes"
                )
        except WregError as exc:
            return FileFacts(fmt, {}, 0, (), exc.message)
    tensors = await _entries(store, entry, layout)
    return FileFacts(fmt, layout.metadata, layout.parameters, tensors, None)


class _Head:
    """The first bytes of a file, read in whole chunks (no chunk is decoded twice)."""

    def __init__(self, store: ObjectStore, entry: FileEntry) -> None:
        self.store, self.entry = store, entry
        self.data = bytearray()
        self.ends = [at + c.size for at, c in entry.chunk_offsets()]

    async def read_to(self, want: int) -> None:
        if want <= len(self.data):
            return
        # Up to the end of the chunk holding byte want - 1.
        stop = next((end for end in self.ends if end >= want), self.entry.size)
        async for piece in read_range(self.store, self.entry, len(self.data), stop):
            self.data += piece


async def _entries(store: ObjectStore, entry: FileEntry, layout: Layout) -> tuple[TensorEntry, ...]:
    """Every tensor with its digest: whole chunks by their digest, parts of chunks by
    the digest of their bytes (read here, up to ``MAX_PACKED_BYTES`` of chunks)."""
    starts = [at for at, _ in entry.chunk_offsets()]
    chunks = [(c.digest, c.size) for c in entry.chunks]
    cut = [tensor_pieces(starts, chunks, t.begin, t.end) for t in layout.tensors]
    wanted: dict[int, int] = {}  # chunk index -> size, of chunks shared by a tensor
    for pieces in cut:
        for p in pieces:
            if not p.whole:
                wanted[p.index] = p.size
    readable: set[int] = set()
    budget = MAX_PACKED_BYTES
    for index in sorted(wanted):
        if wanted[index] > budget:
            break
        budget -= wanted[index]
        readable.add(index)
    raw: dict[int, bytes] = {}
    for index in sorted(readable):
        at = starts[index]
        raw[index] = b"".join(
            [bytes(p) async for p in read_range(store, entry, at, at + chunks[index][1])]
        )

    def digests() -> list[str | None]:
        out: list[str | None] = []
        for pieces in cut:
            named: list[tuple[str, int]] = []
            for p in pieces:
                if p.whole:
                    named.append((p.digest, p.length))
                elif p.index in raw:
                    named.append(
                        (digest_bytes(raw[p.index][p.start : p.start + p.length]), p.length)
                    )
                else:
                    break
            else:
                out.append(tensor_digest(named))
                continue
            out.append(None)
        return out

    names = await to_thread.run_sync(digests)
    return tuple(
        TensorEntry(t.name, t.dtype, t.shape, t.begin, t.nbytes, t.parameters, d)
        for t, d in zip(layout.tensors, names, strict=True)
    )
