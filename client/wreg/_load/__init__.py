"""Loading: tensors from the registry or the node cache straight into a model.

In the order the data flows (one module per stage):

1. ``header``       safetensors headers, parsed strictly (nothing in them is trusted).
2. ``select``       pure: which tensors, which dim-0 rows of them, which chunks hold them.
3. ``produce``      the pull with hooks: headers first, then only the chunks wanted; each
                    tensor is *ready* when the last chunk it overlaps is verified.
4. ``materialize``  a ready tensor's bytes become an array: mapped (CPU), or through
                    pinned staging buffers to a torch device.

``TensorStream`` runs the producer on its own thread and event loop and hands tensors to
the consumer in completion order; ``astream`` does the same on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Final

from wreg._load.materialize import Materializer
from wreg._load.produce import LoadStats, Ready, Source
from wreg._load.select import Selection

__all__ = ["LoadStats", "Selection", "TensorStream", "astream"]

_END: Final = object()

# Runs the load: given (emit, stats, sources), returns the producer coroutine.
Producer = Callable[[Callable[[Ready], None], LoadStats, list[Source]], Coroutine[Any, Any, None]]


class TensorStream:
    """``(name, tensor)`` pairs in the order they become ready; ``stats`` says what was
    read and fetched (complete once the stream is exhausted). Close it (or use ``with``)
    to stop early: the download stops and its partial files stay for a later pull."""

    def __init__(self, producer: Producer, materialize: Materializer) -> None:
        self.stats = LoadStats()
        self._materialize = materialize
        self._sources: list[Source] = []
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(producer,), name="wreg-load", daemon=True
        )
        self._closed = False
        self._thread.start()
        self._started.wait()

    def _run(self, producer: Producer) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            try:
                await producer(self._items.put, self.stats, self._sources)
            except BaseException as exc:
                self._items.put(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._items.put(_END)

        try:
            asyncio.run(main())
        except BaseException:  # noqa: S110 - handed to the consumer above
            pass
        finally:
            self._started.set()

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self

    def __next__(self) -> tuple[str, Any]:
        if self._closed:
            raise StopIteration
        item = self._items.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        assert isinstance(item, Ready)  # noqa: S101 - narrows: only these are queued
        tensor = self._materialize(item)
        self.stats.tensors += 1
        return item.want.info.name, tensor

    def close(self) -> None:
        """Stop the load (if still running) and release its files."""
        if self._closed:
            return
        self._closed = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop has just finished
                loop.call_soon_threadsafe(task.cancel)
        if threading.current_thread() is not self._thread:  # __del__ may run on it
            self._thread.join()
        self._materialize.close()
        for source in self._sources:
            source.close()

    def __enter__(self) -> TensorStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


async def astream(
    producer: Producer, materialize: Materializer, stats: LoadStats
) -> AsyncIterator[tuple[str, Any]]:
    """``TensorStream`` on the running event loop."""
    items: asyncio.Queue[object] = asyncio.Queue()
    sources: list[Source] = []

    async def run() -> None:
        try:
            await producer(items.put_nowait, stats, sources)
        finally:
            items.put_nowait(_END)

    task = asyncio.ensure_future(run())
    try:
        while True:
            item = await items.get()
            if item is _END:
                break
            assert isinstance(item, Ready)  # noqa: S101 - narrows: only these are queued
            tensor = materialize(item)
            stats.tensors += 1
            yield item.want.info.name, tensor
        await task  # raises what the producer raised
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        materialize.close()
        for source in sources:
            source.close()
