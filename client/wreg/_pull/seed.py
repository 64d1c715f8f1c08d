"""Stage 4a, seed: chunks some cached blob already holds are copied from it
(``copy_file_range``: kernel-side, a reflink where the filesystem can) instead of
downloaded. From a blob the cache does not trust (``ChunkLocation.trusted``) a chunk is
read and hashed before it is written."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from wreg._cache import ChunkLocation
from wreg._pull.assembly import Needs, pwrite_all
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode

# Seeds handed to one executor job at most (bytes to copy, every placement counted).
SEED_BATCH: Final = 64 << 20


class Seed(NamedTuple):
    """A chunk to copy from a cached blob to every ``(fd, offset)`` of ``writes``."""

    digest: str
    source: ChunkLocation
    writes: list[tuple[int, int]]


def seed_batches(seeds: Mapping[str, ChunkLocation], needs: Needs) -> Iterable[list[Seed]]:
    batch: list[Seed] = []
    size = 0
    for digest, source in seeds.items():
        batch.append(Seed(digest, source, [(p.target.fd, p.offset) for p in needs[digest]]))
        size += source.length * len(needs[digest])
        if size >= SEED_BATCH:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def seed(batch: list[Seed]) -> list[str]:
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
                    pwrite_all(fd, memoryview(data), at)
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
