"""Stage 4b, fetch: one bounded pool downloads, decodes, verifies and writes chunks.

Every chunk a pull downloads goes through its one ``FetchPool``: the chunks the plan
fetches, the seeds that failed, and the repairs of chunks a commit-time check finds bad
(``FetchPool.fetch`` may be called again while earlier calls run; their jobs share the
queue, the workers and the memory budget). A worker is an asyncio task owning one reused
pair of buffers (encoded, raw) and a ``ChunkReader`` connection; it hands each job to a
fetch thread, which reads the chunk (or batch), decodes, verifies and ``pwrite``s it in
one hop (socket reads outside the GIL). At most ``inflight_bytes`` of buffers exist, so
at most that many workers (and ``concurrency``) run; workers start as jobs are queued
and stop when the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from wreg import _buffers
from wreg._pull.assembly import Context, Needs, Placement, Target, pwrite_all
from wreg.core.batch import FRAME_HEADER_SIZE
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode

if TYPE_CHECKING:
    from wreg._http import ChunkReader

# Chunks smaller than this are fetched in batches (``jobs``), larger ones alone.
BATCH_CHUNK_MAX: Final = 1 << 20
# Per chunk in a batch: the frame header and room for the chunk's encoding header.
FRAME_SLACK: Final = FRAME_HEADER_SIZE + 128

# Called on the event loop as each chunk of an order has been written to all its places.
Written = Callable[[Target, int], None]


@dataclass(slots=True, eq=False)
class _Order:
    """One ``FetchPool.fetch`` call: its chunks, their places, and what to do as each
    lands."""

    needs: Needs
    sizes: dict[str, int]
    written: Written
    report: bool = True  # advance the pull's progress as chunks land
    done: set[str] = field(default_factory=set)


class Run(NamedTuple):
    """Large chunks fetched in one batched request and read one frame at a time (each
    chunk decoded, verified and written before the next is read): a worker's buffers
    hold one chunk, whatever the run's length."""

    digests: tuple[str, ...]


Work = str | list[str] | Run


class _Job(NamedTuple):
    work: Work  # one chunk, a batch of small ones, or a run of large ones
    order: _Order
    future: asyncio.Future[bool]
    probe: bool  # a batch that tells whether the registry has batches: never split


class FetchPool:
    """The pull's fetch workers and threads, for chunks of at most ``max_chunk`` bytes.

    Use ``fetch`` for each set of chunks, and ``close`` once (it cancels what still
    runs). A failed job (after its retries) breaks the pool: the other workers are
    cancelled and every job still queued fails with the same error.
    """

    def __init__(self, ctx: Context, max_chunk: int) -> None:
        self._ctx = ctx
        self.max_chunk = max_chunk
        self.size = _buffers.buffer_size(max_chunk)
        self.most = _buffers.slots_for(ctx.inflight_bytes, self.size, 2, ctx.concurrency)
        self._queue: deque[_Job] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._running: dict[asyncio.Task[None], _Job] = {}  # worker -> its job
        self._threads: ThreadPoolExecutor | None = None
        self._broken: BaseException | None = None
        self._probing = asyncio.Lock()

    async def fetch(
        self, needs: Needs, sizes: dict[str, int], written: Written, *, report: bool = True
    ) -> None:
        """Download, decode, verify and write every chunk of ``needs``; returns once all
        of them landed (``written`` called for each place, and the progress advanced
        unless ``report`` is false: a repair rewrites bytes already counted).

        Chunks under ``BATCH_CHUNK_MAX`` go in batches (``jobs``): one request for as
        many as fit a worker's encoded buffer (and ``MAX_BATCH_CHUNKS``), so the batch
        counts against ``inflight_bytes`` like one large chunk. A batch is verified
        whole before any of it is written. Large chunks keep the single, cacheable GET;
        so does everything when the registry has no batched route (``Registry.batches``).
        """
        if not needs:
            return
        if self._broken is not None:
            raise self._broken
        if max(sizes[d] for d in needs) > self.max_chunk:
            raise ValueError(f"a chunk is larger than this fetch pool's {self.max_chunk} bytes")
        registry = self._ctx.registry
        order = _Order(needs, sizes, written, report)
        runs = registry.run_bytes if registry.large_batches else 0
        jobs = jobs_for(needs, sizes, self.size, registry.batches, runs)
        if any(isinstance(job, list | Run) for job in jobs) and not registry.batches_known:
            async with self._probing:  # one probe at a time: the next may know the answer
                # A batch of small chunks first, if there is one: its answer also says
                # whether runs are welcome (``LARGE_BATCHES_HEADER``) before any is sent.
                first = next((i for i, j in enumerate(jobs) if isinstance(j, list)), None)
                if first is None:
                    first = next((i for i, j in enumerate(jobs) if isinstance(j, Run)), None)
                if first is not None and not registry.batches_known:
                    # Whether this registry has the batched route is learnt from one batch
                    # before the rest is queued: without it, every chunk becomes a job of
                    # its own again, fetched in parallel, not one batch's chunks one after
                    # another.
                    (probe,) = self._submit([jobs.pop(first)], order, probe=True)
                    if not await probe:
                        left = {d: needs[d] for d in needs if d not in order.done}
                        jobs = jobs_for(left, sizes, self.size, False)
        if jobs:
            await asyncio.gather(*self._submit(jobs, order))

    async def close(self) -> None:
        """Stop the workers (a fetch thread still reading has its read broken off)."""
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for job in self._queue:
            job.future.cancel()
        self._queue.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=False)

    def _submit(
        self, work: list[Work], order: _Order, probe: bool = False
    ) -> list[asyncio.Future[bool]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        for item in work:
            future: asyncio.Future[bool] = loop.create_future()
            future.add_done_callback(_retrieve)
            self._queue.append(_Job(item, order, future, probe))
            futures.append(future)
        if self._threads is None:
            # One fetch thread per worker: each reads its chunk (or batch), decodes,
            # verifies and writes it in one hop (``ChunkReader``).
            self._threads = ThreadPoolExecutor(
                max_workers=max(1, self.most), thread_name_prefix="wreg-fetch"
            )
        for _ in range(min(self.most - len(self._workers), len(self._queue))):
            self._workers.add(asyncio.ensure_future(self._worker()))
        return futures

    def _break(self, exc: BaseException) -> None:
        """Fail every job queued or running with ``exc`` (each caller sees the error, not
        a cancellation), then cancel the other workers."""
        self._broken = exc
        for job in [*self._running.values(), *self._queue]:
            if not job.future.done():
                job.future.set_exception(exc)
        self._queue.clear()
        me = asyncio.current_task()
        for task in self._workers:
            if task is not me:
                task.cancel()

    async def _worker(self) -> None:
        """Take jobs until the queue is empty. Between finding it empty and leaving the
        worker set nothing awaits, so a job queued meanwhile always finds a worker."""
        slot: _Slot | None = None
        me = asyncio.current_task()
        try:
            while self._queue and self._broken is None:
                job = self._queue.popleft()
                if job.future.done():  # its caller went away
                    continue
                if slot is None:
                    # Lazily mapped: a fresh bytearray is zeroed as it is made, which held
                    # a pull's first chunk up ~0.1 s while every worker made its buffers.
                    slot = _Slot(
                        self._ctx.registry.chunk_reader(),
                        _buffers.take_lazy(self.size),
                        _buffers.take_lazy(self.size),
                    )
                if me is not None:
                    self._running[me] = job
                try:
                    result = await self._run(job, slot)
                except asyncio.CancelledError:
                    job.future.cancel()
                    raise
                except BaseException as exc:
                    if not job.future.done():
                        job.future.set_exception(exc)
                    self._break(exc)
                    return
                finally:
                    if me is not None:
                        self._running.pop(me, None)
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            if me is not None:
                self._workers.discard(me)
            if slot is not None:
                slot.release(self._ctx.inflight_bytes)

    async def _run(self, job: _Job, slot: _Slot) -> bool:
        if isinstance(job.work, str):
            await self._one(job.work, job.order, slot)
            return True
        if isinstance(job.work, Run):
            if job.probe:
                return await self._stream(job.work, job.order, slot)
            if not await self._stream(job.work, job.order, slot):
                for digest in job.work.digests:
                    await self._one(digest, job.order, slot)
            return True
        if job.probe:
            return await self._many(job.work, job.order, slot)
        if not await self._many(job.work, job.order, slot):
            for digest in job.work:
                await self._one(digest, job.order, slot)
        return True

    def _landed(self, digest: str, order: _Order) -> None:
        stats, progress = self._ctx.stats, self._ctx.progress
        order.done.add(digest)
        places = order.needs[digest]
        stats.chunks += 1
        stats.fetched_raw += order.sizes[digest] * len(places)
        for t, _offset, index in places:
            if order.report:
                progress.advance(order.sizes[digest])
            order.written(t, index)

    def _fetch_one(
        self, reader: ChunkReader, digest: str, order: _Order, encoded: memoryview, raw: memoryview
    ) -> int:
        """One attempt, in a fetch thread: read the chunk, decode, verify, write it."""
        n = reader.get_into(self._ctx.name, digest, encoded)
        work = [(digest, memoryview(encoded)[:n], order.sizes[digest], order.needs[digest])]
        decode_write(work, raw)
        return n

    async def _one(self, digest: str, order: _Order, slot: _Slot) -> None:
        from wreg._http import with_retries

        threads = self._threads
        assert threads is not None  # noqa: S101 - narrows: made before any worker

        def attempt() -> asyncio.Future[int]:
            slot.running = threads.submit(
                self._fetch_one, slot.reader, digest, order, slot.encoded, slot.raw
            )
            return asyncio.wrap_future(slot.running)

        n = await with_retries(attempt)  # not ``stats.received += await``: it loses updates
        self._ctx.stats.received += n
        slot.running = None
        self._landed(digest, order)

    def _fetch_many(
        self, reader: ChunkReader, digests: list[str], order: _Order, slot: _Slot
    ) -> None:
        """One attempt, in a fetch thread: read a batch, verify all of it, write it."""
        spans = reader.fetch_into(self._ctx.name, digests, slot.encoded)
        view = memoryview(slot.encoded)
        work = [
            (d, view[start:end], order.sizes[d], order.needs[d])
            for d, (start, end) in zip(digests, spans, strict=True)
        ]
        decode_write(work, slot.raw)
        slot.batch_received = sum(end - start for start, end in spans)  # chunk bytes only

    async def _many(self, digests: list[str], order: _Order, slot: _Slot) -> bool:
        """One batch; False when it has to go one chunk at a time instead."""
        if not self._ctx.registry.batches:
            return False
        return await self._batched(self._fetch_many, digests, order, slot)

    async def _batched(
        self,
        fetch: Callable[[ChunkReader, Any, _Order, _Slot], None],
        work: Any,
        order: _Order,
        slot: _Slot,
    ) -> bool:
        """``fetch(reader, work, order, slot)`` in a fetch thread, retried; then every
        chunk of ``work`` (digests, or a ``Run``) has landed. False when the registry has
        no batches (or none this large): its chunks go one at a time instead."""
        from wreg._http import BatchesUnsupported, BatchTooLarge, with_retries

        threads = self._threads
        assert threads is not None  # noqa: S101 - narrows: made before any worker

        def attempt() -> asyncio.Future[None]:
            slot.running = threads.submit(fetch, slot.reader, work, order, slot)
            return asyncio.wrap_future(slot.running)

        try:
            await with_retries(attempt)
        except (BatchesUnsupported, BatchTooLarge):
            return False
        finally:
            # Cancelled while the thread still runs: keep it, so ``release`` breaks the
            # read off instead of closing a connection the thread is using.
            if slot.running is not None and slot.running.done():
                slot.running = None
        self._ctx.stats.received += slot.batch_received
        for digest in work.digests if isinstance(work, Run) else work:
            self._landed(digest, order)
        return True

    def _fetch_run(self, reader: ChunkReader, run: Run, order: _Order, slot: _Slot) -> None:
        """One attempt, in a fetch thread: read a run frame by frame, each chunk decoded,
        verified and written before the next is read."""
        digests = list(run.digests)

        def each(index: int, encoded: memoryview) -> None:
            digest = digests[index]
            decode_write([(digest, encoded, order.sizes[digest], order.needs[digest])], slot.raw)

        slot.batch_received = reader.fetch_each(self._ctx.name, digests, slot.encoded, each)

    async def _stream(self, run: Run, order: _Order, slot: _Slot) -> bool:
        """One run; False when its chunks have to go one at a time instead."""
        registry = self._ctx.registry
        if not registry.batches or not registry.large_batches:
            return False
        return await self._batched(self._fetch_run, run, order, slot)


def _retrieve(future: asyncio.Future[bool]) -> None:
    """Mark a job's failure as seen: a caller gone away (or one that saw another job's
    failure first) does not leave "exception never retrieved" behind."""
    if not future.cancelled():
        with contextlib.suppress(BaseException):
            future.exception()


@dataclass(slots=True, eq=False)
class _Slot:
    """A fetch worker's connection and buffers, and the thread job using them if any."""

    reader: ChunkReader
    encoded: memoryview
    raw: memoryview
    running: Future[Any] | None = None
    batch_received: int = 0

    def release(self, inflight_bytes: int) -> None:
        """Close the connection; give the buffers back unless a fetch thread may still
        write into them (a cancelled pull: its read is broken off, its buffers dropped)."""
        if self.running is not None and not self.running.done():
            self.reader.abort()  # the thread's read fails; it drops its connection itself
            return
        self.reader.close()
        _buffers.give(self.encoded, inflight_bytes)
        _buffers.give(self.raw, inflight_bytes)


def jobs_for(
    needs: Needs, sizes: dict[str, int], budget: int, batches: bool, run_bytes: int = 0
) -> list[Work]:
    """The fetch jobs, in the order of ``needs``: a digest alone (a large chunk, or every
    chunk when ``batches`` is off), a batch of small ones whose encodings (estimated from
    the raw size, ``FRAME_SLACK`` each) fill at most ``budget`` bytes, or with
    ``run_bytes`` a ``Run`` of large ones adding up to at most that many raw bytes."""
    from wreg.core.sizes import MAX_BATCH_CHUNKS

    jobs: list[Work] = []
    current: list[str] = []
    run: list[str] = []
    run_used = 0
    used = 0

    def close_run() -> None:
        nonlocal run, run_used
        if run:
            jobs.append(Run(tuple(run)) if len(run) > 1 else run[0])
        run, run_used = [], 0

    for digest in needs:
        cost = sizes[digest] + FRAME_SLACK
        if batches and run_bytes and sizes[digest] >= BATCH_CHUNK_MAX and cost <= budget:
            if run and (run_used + sizes[digest] > run_bytes or len(run) >= MAX_BATCH_CHUNKS):
                close_run()
            run.append(digest)
            run_used += sizes[digest]
            continue
        if not batches or sizes[digest] >= BATCH_CHUNK_MAX or cost > budget:
            jobs.append(digest)
            continue
        if current and (used + cost > budget or len(current) >= MAX_BATCH_CHUNKS):
            jobs.append(current)
            current, used = [], 0
        current.append(digest)
        used += cost
    if current:
        jobs.append(current if len(current) > 1 else current[0])
    close_run()
    return jobs


def decode_write(
    work: list[tuple[str, memoryview, int, list[Placement]]], raw: bytearray | memoryview
) -> None:
    """Decode and verify each chunk of ``work`` (digest, encoded bytes, raw size, places),
    all of them first, then ``pwrite`` each wherever it goes (worker thread). The raw
    sizes add up to at most ``len(raw)``: decoded chunks lie side by side in it."""
    # Imported here: numpy and zstandard cost a warm pull ~0.1 s of start-up for nothing.
    from wreg.core.encoding import HEADER_SIZE, Codec, Transform, decode_chunk_into, parse_header

    out = memoryview(raw)
    at = 0
    verified: list[tuple[memoryview, list[Placement]]] = []
    for digest, encoded, size, places in work:
        codec, transform, raw_len = parse_header(encoded)
        if raw_len != size:
            raise ErrorCode.DIGEST_MISMATCH.error(
                f"chunk {digest} is {raw_len} bytes, the manifest says {size}"
            )
        if (
            codec is Codec.NONE
            and transform is Transform.NONE
            and len(encoded) - HEADER_SIZE == raw_len
        ):
            data = encoded[HEADER_SIZE:]  # stored raw: verify and write straight from the buffer
            actual = digest_bytes(data)
            if actual != digest:
                raise ErrorCode.DIGEST_MISMATCH.error(
                    f"chunk content does not match its digest: expected {digest}, got {actual}",
                    detail={"expected": digest, "actual": actual},
                )
        else:
            decode_chunk_into(encoded, out[at:], expected_digest=digest)
            data = out[at : at + raw_len]
            at += raw_len
        verified.append((data, places))
    for data, places in verified:
        for t, offset, _index in places:
            pwrite_all(t.fd, data, offset)
