"""Pull: resolve → fetch manifest → take what the node cache has → download the rest in
parallel → decode + verify each chunk → ``pwrite`` into a preallocated temp file →
verify the whole file → atomic rename into ``blobs/`` → snapshot (and ``-o DIR``).

Each distinct chunk is fetched once per pull even if several files hold it, and chunks
some cached blob already holds are copied from it instead of downloaded. A file appears
under its final name only after its whole-file digest has been checked.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from wreg._cache import NodeCache
from wreg._http import Registry
from wreg._progress import Progress
from wreg._results import PullResult
from wreg.core.digest import Hasher, digest_bytes
from wreg.core.encoding import decode_chunk_into, encoded_raw_length
from wreg.core.errors import IntegrityError, InvalidInput
from wreg.core.manifest import FileEntry, Manifest
from wreg.core.reference import Reference

_READ_BLOCK = 8 << 20


@dataclass(slots=True)
class _Target:
    """A file being assembled under tmp/."""

    entry: FileEntry
    temp: Path
    fd: int = -1


@dataclass(slots=True)
class _Plan:
    # chunk digest -> every (target, offset) that needs it
    needs: dict[str, list[tuple[_Target, int]]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


async def resolve(registry: Registry, ref: Reference) -> tuple[Manifest, bytes]:
    body, claimed = await registry.get_manifest(ref)
    digest = digest_bytes(body)
    expected = ref.digest or claimed
    if expected is not None and digest != expected:
        raise IntegrityError(
            f"manifest for {ref} does not match its digest: expected {expected}, got {digest}"
        )
    return Manifest.from_json_bytes(body), body


async def pull(
    registry: Registry,
    cache: NodeCache,
    ref: Reference,
    dest: Path | None,
    executor: Executor,
    progress: Progress,
    concurrency: int,
) -> PullResult:
    manifest, body = await resolve(registry, ref)
    cache.save_manifest(manifest.digest, body)
    todo = [e for e in manifest.files if not cache.has_blob(e)]
    from_cache = manifest.total_size - sum(e.size for e in todo)
    # Files with the same content are assembled once.
    unique = list({e.digest: e for e in todo}.values())
    targets = [_Target(e, cache.temp_path(e.digest)) for e in unique]
    downloaded = 0
    try:
        plan = _plan(targets)
        for t in targets:
            t.fd = os.open(t.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.ftruncate(t.fd, t.entry.size)
        seeded = cache.locate_chunks(plan.needs)
        progress.start("downloading", sum(e.size for e in unique))
        loop = asyncio.get_running_loop()
        for digest, (blob, offset, length) in seeded.items():
            await loop.run_in_executor(executor, _seed, blob, offset, length, plan.needs[digest])
            from_cache += length * len(plan.needs[digest])
            progress.advance(length * len(plan.needs[digest]))
        wanted = [d for d in plan.needs if d not in seeded]
        downloaded = await _fetch(registry, wanted, plan, executor, progress, concurrency)
        for t in targets:
            await loop.run_in_executor(executor, _verify_file, t)
            os.close(t.fd)
            t.fd = -1
            cache.commit_blob(t.temp, t.entry)
    finally:
        for t in targets:
            if t.fd >= 0:
                os.close(t.fd)
            t.temp.unlink(missing_ok=True)
    snapshot = cache.build_snapshot(ref.name, manifest)
    if ref.tag is not None:
        cache.write_ref(ref.name, ref.tag, manifest.digest)
    out = snapshot
    if dest is not None:
        materialize(cache, manifest, dest)
        out = dest
    return PullResult(
        reference=str(ref),
        manifest=manifest.digest,
        path=str(out),
        files=len(manifest.files),
        bytes_total=manifest.total_size,
        bytes_downloaded=downloaded,
        bytes_from_cache=from_cache,
    )


def _plan(targets: list[_Target]) -> _Plan:
    plan = _Plan()
    for t in targets:
        for offset, chunk in t.entry.chunk_offsets():
            plan.needs.setdefault(chunk.digest, []).append((t, offset))
            plan.sizes[chunk.digest] = chunk.size
    return plan


def _seed(blob: Path, offset: int, length: int, places: list[tuple[_Target, int]]) -> None:
    """Copy a chunk from a cached blob (kernel-side copy where the filesystem can)."""
    with open(blob, "rb") as src:
        for target, at in places:
            done = 0
            while done < length:
                try:
                    n = os.copy_file_range(
                        src.fileno(), target.fd, length - done, offset + done, at + done
                    )
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    n = os.pwrite(
                        target.fd, os.pread(src.fileno(), length - done, offset + done), at + done
                    )
                if n == 0:
                    raise IntegrityError(f"cached blob {blob} is shorter than the index says")
                done += n


async def _fetch(
    registry: Registry,
    digests: list[str],
    plan: _Plan,
    executor: Executor,
    progress: Progress,
    concurrency: int,
) -> int:
    """Download, decode, verify and write ``digests``; returns wire bytes."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    received = 0

    def write(digest: str, blob: bytes) -> None:
        if encoded_raw_length(blob) != plan.sizes[digest]:
            raise IntegrityError(f"chunk {digest} has the wrong length")
        buf = bytearray(plan.sizes[digest])
        decode_chunk_into(blob, memoryview(buf), expected_digest=digest)
        for target, at in plan.needs[digest]:
            os.pwrite(target.fd, buf, at)

    async def one(digest: str) -> None:
        nonlocal received
        async with slots:
            blob = await registry.get_chunk(digest)
            received += len(blob)
            await loop.run_in_executor(executor, write, digest, blob)
        progress.advance(plan.sizes[digest] * len(plan.needs[digest]))

    tasks = [asyncio.ensure_future(one(d)) for d in digests]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return received


def _verify_file(t: _Target) -> None:
    hasher = Hasher()
    offset = 0
    while offset < t.entry.size:
        block = os.pread(t.fd, min(_READ_BLOCK, t.entry.size - offset), offset)
        if not block:
            break
        hasher.update(block)
        offset += len(block)
    actual = hasher.digest()
    if offset != t.entry.size or actual != t.entry.digest:
        raise IntegrityError(
            f"{t.entry.path}: assembled file does not match its digest "
            f"(expected {t.entry.digest}, got {actual})"
        )


def materialize(cache: NodeCache, manifest: Manifest, dest: Path) -> None:
    """Put the model's files under ``dest``: hardlinks to cached blobs, else copies.

    Each file is staged under a temporary name and renamed, so ``dest`` never holds a
    partial file under a final name.
    """
    if dest.exists() and not dest.is_dir():
        raise InvalidInput(f"cannot write to {dest}: not a directory", code="BODY_INVALID")
    for entry in manifest.files:
        final = dest / entry.path
        final.parent.mkdir(parents=True, exist_ok=True)
        blob = cache.blob_path(entry.digest)
        try:
            if final.stat().st_ino == blob.stat().st_ino:
                continue
        except FileNotFoundError:
            pass
        staging = final.with_name(f".{final.name}.wreg-{uuid.uuid4().hex[:8]}")
        try:
            os.link(blob, staging)
        except OSError:
            shutil.copyfile(blob, staging)
            os.chmod(staging, 0o644)
        if entry.mode & 0o111:
            os.chmod(staging, os.stat(staging).st_mode | 0o111)
        os.replace(staging, final)
