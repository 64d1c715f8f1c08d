"""Reusable chunk buffers.

Fresh memory is slow to touch on the VMs we measure on (pages freed a few seconds ago
cost several times more than pages reused at once), and a pull or push moves every byte
of a model through a chunk-sized buffer. So buffers are allocated once per process,
handed out by ``take`` and returned by ``give``; the free list keeps at most the
configured in-flight budget.
"""

from __future__ import annotations

import mmap
import threading
from typing import Final

from wreg.core.sizes import KiB, MiB

# Room for a chunk's encoding overhead (header, plane table) on top of its raw bytes.
ENCODING_SLACK: Final = 64 * KiB

_lock = threading.Lock()
_free: dict[int, list[bytearray]] = {}
_free_lazy: dict[int, list[memoryview]] = {}
_retained_limit = 256 * MiB


def buffer_size(max_chunk: int) -> int:
    """The buffer size class for chunks of at most ``max_chunk`` raw bytes."""
    return -(-max(max_chunk, 1) // MiB) * MiB + ENCODING_SLACK


def take(size: int) -> bytearray:
    """A buffer of exactly ``size`` bytes, reused when one is free."""
    with _lock:
        free = _free.get(size)
        if free:
            return free.pop()
    return bytearray(size)


def take_lazy(size: int) -> memoryview:
    """A writable buffer of exactly ``size`` bytes whose fresh pages are mapped as they
    are first written (anonymous ``mmap``), not zeroed up front as a ``bytearray`` is:
    making a fetch worker's buffers costs nothing before its first read, and the faults
    happen in the socket read, outside the GIL. Reused when one is free."""
    with _lock:
        free = _free_lazy.get(size)
        if free:
            return free.pop()
    return memoryview(mmap.mmap(-1, size))


def give(buf: bytearray | memoryview, limit: int | None = None) -> None:
    """Return ``buf`` to the free list (dropped if the list already holds ``limit``)."""
    global _retained_limit
    with _lock:
        if limit is not None:
            _retained_limit = limit
        held = sum(len(b) for bufs in _free.values() for b in bufs)
        held += sum(len(b) for views in _free_lazy.values() for b in views)
        if held + len(buf) > _retained_limit:
            return
        if isinstance(buf, memoryview):
            _free_lazy.setdefault(len(buf), []).append(buf)
        else:
            _free.setdefault(len(buf), []).append(buf)


def slots_for(budget: int, size: int, per_slot: int, concurrency: int) -> int:
    """How many chunks may be in flight: ``concurrency`` capped by the memory budget."""
    return max(1, min(concurrency, budget // (size * per_slot)))
