"""Push: scan → chunk → hash → ask which chunks are missing → encode + upload those →
commit the manifest (and move the tag in the same transaction on the server).

Files are read through ``mmap`` so chunk bytes are never copied before hashing or
encoding; blake3 and zstd release the GIL, so a thread pool keeps every core busy while
the event loop keeps uploads in flight.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import stat
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from wreg._http import Registry
from wreg._progress import Progress
from wreg._results import PushResult
from wreg.core.chunking import ChunkSpec, plan_file
from wreg.core.digest import Hasher, digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.errors import InvalidInput
from wreg.core.manifest import MODE_EXEC, MODE_FILE, ChunkRef, FileEntry, Manifest
from wreg.core.reference import Reference


@dataclass(slots=True)
class _ScannedFile:
    path: Path
    relpath: str
    mode: int
    size: int
    specs: list[ChunkSpec]
    view: memoryview | None = None
    digests: list[str] | None = None
    digest: str | None = None


def scan_tree(root: Path) -> list[tuple[Path, str, int]]:
    """(absolute path, POSIX relative path, mode) of every regular file under ``root``."""
    if not root.exists():
        raise InvalidInput(f"cannot push {root}: no such file or directory", code="BODY_INVALID")
    if not root.is_dir():
        raise InvalidInput(f"cannot push {root}: not a directory", code="BODY_INVALID")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.stat()  # follows symlinks: a link to a file pushes its content
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = path.relative_to(root).as_posix()
            mode = MODE_EXEC if st.st_mode & 0o111 else MODE_FILE
            found.append((path, rel, mode))
    if not found:
        raise InvalidInput(f"nothing to push: {root} contains no files", code="BODY_INVALID")
    return found


def default_reference(root: Path) -> Reference:
    name = root.resolve().name
    try:
        return Reference.parse(name)
    except InvalidInput:
        raise InvalidInput(
            f"directory name {name!r} is not a valid repository name; "
            "give a reference, e.g. `wreg push DIR team/model@v1`",
            code="NAME_INVALID",
        ) from None


async def push(
    registry: Registry,
    root: Path,
    ref: Reference,
    executor: Executor,
    progress: Progress,
    concurrency: int,
) -> PushResult:
    if ref.digest is not None:
        raise InvalidInput("push needs a tag, not a digest", code="REFERENCE_INVALID")
    files = [
        _ScannedFile(path, rel, mode, path.stat().st_size, [])
        for path, rel, mode in scan_tree(root)
    ]
    loop = asyncio.get_running_loop()
    with ExitStack() as stack:
        for f in files:
            f.view = stack.enter_context(_mapped(f.path, f.size))
        total = sum(f.size for f in files)
        progress.start("hashing", total)

        def hash_file(f: _ScannedFile) -> None:
            assert f.view is not None
            f.specs = plan_file(f.path)
            f.digests = []
            for s in f.specs:
                f.digests.append(digest_bytes(f.view[s.offset : s.offset + s.length]))
            hasher = Hasher()
            hasher.update(f.view)
            f.digest = hasher.digest()
            progress.advance(f.size)

        await asyncio.gather(*(loop.run_in_executor(executor, hash_file, f) for f in files))

        where: dict[str, tuple[_ScannedFile, ChunkSpec]] = {}
        for f in files:
            assert f.digests is not None
            for spec, digest in zip(f.specs, f.digests, strict=True):
                where.setdefault(digest, (f, spec))
        missing = await registry.missing_chunks(list(where))
        bytes_new = sum(where[d][1].length for d in missing)
        sent = await _upload(registry, missing, where, executor, progress, concurrency)

        manifest = Manifest.build(
            FileEntry(
                f.relpath,
                f.size,
                f.digest or "",
                f.mode,
                tuple(ChunkRef(d, s.length) for s, d in zip(f.specs, f.digests or [], strict=True)),
            )
            for f in files
        )
        body = manifest.to_json_bytes()
        try:
            await registry.put_manifest(ref.name, manifest.digest, body, ref.tag)
        except InvalidInput as exc:
            # Chunks can vanish between the query and the commit (GC): send them again once.
            gone = (exc.detail or {}).get("missing") if isinstance(exc.detail, dict) else None
            if exc.code != "MANIFEST_CHUNKS_MISSING" or not gone:
                raise
            sent += await _upload(registry, set(gone), where, executor, progress, concurrency)
            await registry.put_manifest(ref.name, manifest.digest, body, ref.tag)
    return PushResult(
        reference=str(ref),
        manifest=manifest.digest,
        files=len(files),
        bytes_total=total,
        bytes_new=bytes_new,
        bytes_sent=sent,
        chunks_total=len(where),
        chunks_new=len(missing),
    )


async def _upload(
    registry: Registry,
    digests: set[str],
    where: dict[str, tuple[_ScannedFile, ChunkSpec]],
    executor: Executor,
    progress: Progress,
    concurrency: int,
) -> int:
    """Encode and upload ``digests``; at most ``concurrency`` chunks in memory at once."""
    progress.start("uploading", sum(where[d][1].length for d in digests if d in where))
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    sent = 0

    async def one(digest: str) -> None:
        nonlocal sent
        f, spec = where[digest]
        assert f.view is not None
        async with slots:
            raw = f.view[spec.offset : spec.offset + spec.length]
            blob = await loop.run_in_executor(executor, encode_chunk, raw, spec.dtype)
            await registry.put_chunk(digest, blob)
            sent += len(blob)
            progress.advance(spec.length)

    await asyncio.gather(*(one(d) for d in sorted(digests) if d in where))
    return sent


class _mapped:
    """A read-only memoryview of a whole file (empty files get an empty view)."""

    def __init__(self, path: Path, size: int) -> None:
        self._path, self._size = path, size
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None

    def __enter__(self) -> memoryview:
        if self._size == 0:
            self._view = memoryview(b"")
            return self._view
        with open(self._path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)
        return self._view

    def __exit__(self, *exc: object) -> None:
        if self._view is not None:
            self._view.release()
        if self._map is not None:
            self._map.close()
