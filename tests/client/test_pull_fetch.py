"""The pull's fetch pool (``wreg._pull.fetch.FetchPool``) against a fake registry: every
call shares one bounded set of workers and threads (repairs are queued on it while a
fetch runs), a failure reaches every caller, and one batch probe tells the rest."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from wreg._http import BatchesUnsupported, Registry
from wreg._progress import NoProgress
from wreg._pull.assembly import Context, Needs, Placement, Target
from wreg._pull.fetch import FetchPool
from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.errors import ErrorCode, IntegrityError
from wreg.core.manifest import ChunkRef, FileEntry

SIZE = 1000


class FakeRegistry:
    """Serves ``chunks`` (digest -> raw) from memory, one at a time or (if ``batches``)
    never: the batched route answers as an older registry does."""

    def __init__(self, chunks: dict[str, bytes], delay: float = 0.01) -> None:
        self.chunks = chunks
        self.delay = delay
        self.batches = False
        self.batches_known = False
        self.run_bytes = 0
        self.large_batches = False
        self.batch_calls = 0
        self.reading = 0
        self.most_reading = 0
        self.threads: set[str] = set()
        self.broken: set[str] = set()
        self.lock = threading.Lock()

    def chunk_reader(self) -> FakeReader:
        return FakeReader(self)


class FakeReader:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    def get_into(self, name: str, digest: str, buf: bytearray) -> int:
        r = self.registry
        with r.lock:
            r.reading += 1
            r.most_reading = max(r.most_reading, r.reading)
            r.threads.add(threading.current_thread().name)
        try:
            time.sleep(r.delay)
            raw = bytearray(r.chunks[digest])
            if digest in r.broken:
                raw[0] ^= 0xFF
            encoded = encode_chunk(bytes(raw))
            buf[: len(encoded)] = encoded
            return len(encoded)
        finally:
            with r.lock:
                r.reading -= 1

    def fetch_into(self, name: str, digests: list[str], buf: bytearray) -> list[tuple[int, int]]:
        with self.registry.lock:
            self.registry.batch_calls += 1
        time.sleep(self.registry.delay)
        self.registry.batches = False
        raise BatchesUnsupported

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def setup(tmp_path: Path, n: int, concurrency: int) -> tuple[FakeRegistry, Context, Target]:
    raws = [os.urandom(SIZE) for _ in range(n)]
    chunks = {digest_bytes(raw): raw for raw in raws}
    entry = FileEntry.of("f", [ChunkRef(d, SIZE) for d in chunks])
    fd = os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT, 0o600)
    target = Target(entry, tmp_path / "f.part", cast(Any, None), fd=fd)
    registry = FakeRegistry(chunks)
    ctx = Context(
        cast(Registry, registry),
        "m",
        cast(Any, None),
        cast(Any, None),
        NoProgress(),
        concurrency,
        64 << 20,
    )
    return registry, ctx, target


def needs_of(t: Target, indices: range) -> tuple[Needs, dict[str, int]]:
    chunks = list(t.entry.chunk_offsets())
    needs: Needs = {chunks[i][1].digest: [Placement(t, chunks[i][0], i)] for i in indices}
    return needs, dict.fromkeys(needs, SIZE)


def contents(t: Target) -> bytes:
    return os.pread(t.fd, t.entry.size, 0)


def expected(registry: FakeRegistry, t: Target) -> bytes:
    return b"".join(registry.chunks[c.digest] for c in t.entry.chunks)


def test_a_fetch_queued_while_another_runs_shares_its_bounded_workers(tmp_path: Path) -> None:
    registry, ctx, t = setup(tmp_path, 12, concurrency=2)
    landed: list[int] = []

    async def go() -> None:
        pool = FetchPool(ctx, SIZE)
        try:
            main = asyncio.ensure_future(
                pool.fetch(*needs_of(t, range(10)), lambda _t, i: landed.append(i))
            )
            await asyncio.sleep(0.02)  # the first fetch is under way: queue a "repair"
            await pool.fetch(*needs_of(t, range(10, 12)), lambda _t, i: landed.append(i))
            await main
        finally:
            await pool.close()

    asyncio.run(go())
    assert sorted(landed) == list(range(12))
    assert contents(t) == expected(registry, t)
    assert registry.most_reading <= 2
    assert len(registry.threads) <= 2  # one pool of fetch threads served both calls
    assert ctx.stats.chunks == 12
    os.close(t.fd)


def test_a_failed_chunk_fails_every_caller_with_its_error(tmp_path: Path) -> None:
    registry, ctx, t = setup(tmp_path, 8, concurrency=2)
    registry.broken.add(t.entry.chunks[0].digest)  # the first job: the rest still queued
    outcomes: list[BaseException | None] = []

    async def go() -> None:
        pool = FetchPool(ctx, SIZE)
        try:
            calls = [
                pool.fetch(*needs_of(t, range(6)), lambda _t, _i: None),
                pool.fetch(*needs_of(t, range(6, 8)), lambda _t, _i: None),
            ]
            for result in await asyncio.gather(*calls, return_exceptions=True):
                outcomes.append(result if isinstance(result, BaseException) else None)
        finally:
            await pool.close()

    asyncio.run(go())
    assert len(outcomes) == 2
    for failure in outcomes:  # the error, never a cancellation
        assert isinstance(failure, IntegrityError), repr(failure)
        assert failure.code is ErrorCode.DIGEST_MISMATCH
    os.close(t.fd)


def test_one_batch_probe_serves_every_call(tmp_path: Path) -> None:
    registry, ctx, t = setup(tmp_path, 12, concurrency=4)
    registry.batches = True  # to be learnt: the registry lacks the batched route

    async def go() -> None:
        pool = FetchPool(ctx, SIZE)
        try:
            await asyncio.gather(
                pool.fetch(*needs_of(t, range(6)), lambda _t, _i: None),
                pool.fetch(*needs_of(t, range(6, 12)), lambda _t, _i: None),
            )
        finally:
            await pool.close()

    asyncio.run(go())
    assert registry.batch_calls == 1
    assert contents(t) == expected(registry, t)
    assert ctx.stats.chunks == 12
    os.close(t.fd)


def test_a_chunk_larger_than_the_pool_allows_is_refused(tmp_path: Path) -> None:
    _registry, ctx, t = setup(tmp_path, 1, concurrency=1)
    needs, _sizes = needs_of(t, range(1))

    async def go() -> None:
        pool = FetchPool(ctx, SIZE)
        try:
            await pool.fetch(needs, dict.fromkeys(needs, SIZE + 1), lambda _t, _i: None)
        finally:
            await pool.close()

    with pytest.raises(ValueError, match="larger than this fetch pool"):
        asyncio.run(go())
    os.close(t.fd)


def test_jobs_batch_small_chunks_and_run_large_ones_in_order() -> None:
    from wreg._pull.fetch import Run, jobs_for
    from wreg.core.sizes import MiB

    sizes = {f"s{i}": 100_000 for i in range(5)} | {f"L{i}": 3 * MiB for i in range(7)}
    order = ["L0", "s0", "L1", "s1", "L2", "s2", "L3", "L4", "s3", "L5", "s4", "L6"]
    needs: dict[str, list[Any]] = {d: [] for d in order}
    budget = 4 * MiB + (64 << 10)
    jobs = jobs_for(needs, sizes, budget, True, 10 * MiB)
    assert jobs == [
        Run(("L0", "L1", "L2")),
        Run(("L3", "L4", "L5")),
        ["s0", "s1", "s2", "s3", "s4"],
        "L6",
    ]
    # Runs off (WREG_FETCH_RUN_BYTES=0): each large chunk alone, the small ones batched.
    assert jobs_for(needs, sizes, budget, True, 0) == [
        "L0", "L1", "L2", "L3", "L4", "L5", "L6", ["s0", "s1", "s2", "s3", "s4"]
    ]  # fmt: skip
    # No batched routes: every chunk alone, in order.
    assert jobs_for(needs, sizes, budget, False, 10 * MiB) == order
