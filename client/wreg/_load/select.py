"""Which tensors (and which rows of them) a load wants, and which chunks hold them. Pure.

* ``tensors``: ``fnmatch`` patterns on tensor names; none means every tensor.
* ``rows``: ``{pattern: (start, stop)}``: a tensor matching a pattern (the first that
  matches) is cut to that range along dim 0, with Python's slice rules.
* ``shard=(rank, world_size)``: every other tensor with at least one dimension is cut
  along dim 0 into ``world_size`` near-equal parts (``numpy.array_split``'s split: the
  first ``n % world_size`` parts are one row longer) and part ``rank`` is kept; 0-d
  tensors are kept whole.

A cut is a contiguous byte range of the file (safetensors is row-major), so the chunks to
fetch are exactly those overlapping it: at most one chunk per end beyond its bytes.
"""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wreg._load.header import Header, TensorInfo
from wreg.core.errors import ErrorCode
from wreg.core.manifest import FileEntry


@dataclass(frozen=True, slots=True)
class Selection:
    """What to load; the default is every tensor whole."""

    tensors: tuple[str, ...] | None = None
    rows: tuple[tuple[str, int, int], ...] = ()
    shard: tuple[int, int] | None = None

    @classmethod
    def of(
        cls,
        tensors: Sequence[str] | str | None = None,
        rows: Mapping[str, tuple[int, int]] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Selection:
        """Checked arguments of ``load`` / ``stream``."""
        if isinstance(tensors, str):
            tensors = (tensors,)
        if tensors is not None and (
            not tensors or not all(isinstance(p, str) and p for p in tensors)
        ):
            raise ErrorCode.SELECTION_INVALID.error(f"tensors={tensors!r}: give non-empty patterns")
        cuts = []
        for pattern, span in (rows or {}).items():
            if (
                not isinstance(pattern, str)
                or not isinstance(span, tuple | list)
                or len(span) != 2
                or not all(type(v) is int for v in span)
            ):
                raise ErrorCode.SELECTION_INVALID.error(
                    f"rows={{{pattern!r}: {span!r}}}: give {{pattern: (start, stop)}}"
                )
            cuts.append((pattern, span[0], span[1]))
        if shard is not None:
            if (
                not isinstance(shard, tuple | list)
                or len(shard) != 2
                or not all(type(v) is int for v in shard)
                or not 0 <= shard[0] < shard[1]
            ):
                raise ErrorCode.SELECTION_INVALID.error(
                    f"shard={shard!r}: give (rank, world_size) with 0 <= rank < world_size"
                )
            shard = (shard[0], shard[1])
        return cls(tuple(tensors) if tensors is not None else None, tuple(cuts), shard)

    @property
    def everything(self) -> bool:
        """Every tensor whole: a full load, which completes the files in the cache."""
        return self.tensors is None and not self.rows and self.shard is None

    def wants(self, name: str) -> bool:
        return self.tensors is None or any(fnmatch.fnmatchcase(name, p) for p in self.tensors)

    def rows_of(self, info: TensorInfo) -> tuple[int, int] | None:
        """The dim-0 range of ``info`` to load; None for the whole tensor."""
        if not info.shape:
            return None
        n = info.shape[0]
        for pattern, start, stop in self.rows:
            if fnmatch.fnmatchcase(info.name, pattern):
                first, last, _ = slice(start, stop).indices(n)
                return first, max(first, last)
        if self.shard is None:
            return None
        rank, world = self.shard
        base, extra = divmod(n, world)
        first = rank * base + min(rank, extra)
        return first, first + base + (1 if rank < extra else 0)


@dataclass(frozen=True, slots=True)
class Want:
    """A tensor (or rows of it) to load: its bytes in the file and its shape once loaded."""

    info: TensorInfo
    begin: int
    end: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def choose(header: Header, selection: Selection) -> list[Want]:
    """The parts of ``header``'s tensors that ``selection`` asks for, in file order."""
    wants = []
    for info in header.tensors:
        if not selection.wants(info.name):
            continue
        cut = selection.rows_of(info)
        if cut is None:
            wants.append(Want(info, info.begin, info.end, info.shape))
            continue
        first, last = cut
        begin = info.begin + first * info.row_bytes
        wants.append(
            Want(
                info,
                begin,
                begin + (last - first) * info.row_bytes,
                (last - first, *info.shape[1:]),
            )
        )
    return wants


def chunk_span(entry: FileEntry, begin: int, end: int, starts: Sequence[int]) -> range:
    """Indices of ``entry``'s chunks overlapping bytes ``[begin, end)`` (``starts``: each
    chunk's offset, ascending). An empty range holds no chunk."""
    if end <= begin:
        return range(0)
    first = bisect.bisect_right(starts, begin) - 1
    last = bisect.bisect_left(starts, end)
    return range(max(first, 0), min(last, len(entry.chunks)))


def chunk_starts(entry: FileEntry) -> list[int]:
    return [offset for offset, _chunk in entry.chunk_offsets()]
