"""The loader's pure parts: strict safetensors headers, selection, chunks per tensor."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from wreg._load import header as headers
from wreg._load.select import Selection, choose, chunk_span, chunk_starts
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import ChunkRef, FileEntry


def head(doc: dict[str, Any], pad: int = 0) -> bytes:
    body = json.dumps(doc).encode() + b" " * pad
    return struct.pack("<Q", len(body)) + body


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def parsed(doc: dict[str, Any], data: int) -> headers.Header:
    raw = head(doc)
    return headers.parse(raw, len(raw) + data, "m.safetensors")


def refused(doc: dict[str, Any], data: int, code: ErrorCode = ErrorCode.TENSORS_INVALID) -> str:
    with pytest.raises(WregError) as info:
        parsed(doc, data)
    assert info.value.code is code
    return str(info.value)


def test_header_parses_tensors_in_file_order_with_metadata() -> None:
    h = parsed(
        {
            "b": tensor("BF16", [2, 3], 24, 36),
            "a": tensor("F32", [2, 3], 0, 24),
            "z": tensor("I8", [], 36, 37),
            "e": tensor("F32", [0, 4], 37, 37),
            "__metadata__": {"format": "pt"},
        },
        37,
    )
    assert [t.name for t in h.tensors] == ["a", "b", "z", "e"]
    a = h.tensors[0]
    assert (a.begin - h.length, a.end - h.length, a.shape, a.row_bytes) == (0, 24, (2, 3), 12)
    assert h.metadata == {"format": "pt"}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"a": tensor("F32", [2, 3], 0, 20)}, "is not 20 bytes"),
        ({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, "overlap"),
        ({"a": tensor("F32", [100], 0, 400)}, "outside the data"),
        ({"a": tensor("F32", [-1], 0, 0)}, "shape"),
        ({"a": tensor("F32", [True], 0, 4)}, "shape"),
        ({"a": tensor("F32", [1] * 17, 0, 4)}, "shape"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, "data_offsets"),
        ({"a": tensor("F32", [1], 0.0, 4)}, "data_offsets"),  # type: ignore[arg-type]
        ({"a": [1, 2]}, "not an object"),
        ({"__metadata__": {"k": 1}}, "__metadata__"),
    ],
)
def test_hostile_headers_are_refused_with_a_reason(doc: dict[str, Any], needle: str) -> None:
    assert needle in refused(doc, 24)


def test_unknown_dtype_is_unsupported_not_invalid() -> None:
    assert "F4" in refused({"a": tensor("F4", [2], 0, 1)}, 1, ErrorCode.TENSORS_UNSUPPORTED)


def test_header_length_is_bounded_before_anything_is_read() -> None:
    with pytest.raises(WregError, match="exceeds"):
        headers.header_length(struct.pack("<Q", 1 << 40), 1 << 41, "m.safetensors")
    with pytest.raises(WregError, match="exceeds"):
        headers.header_length(struct.pack("<Q", 100), 50, "m.safetensors")
    with pytest.raises(WregError, match="too short"):
        headers.header_length(b"\x01\x00", 2, "m.safetensors")
    with pytest.raises(WregError, match="not JSON"):
        headers.parse(struct.pack("<Q", 3) + b"{x}", 11, "m.safetensors")


def test_render_writes_a_header_safetensors_reads() -> None:
    from safetensors.numpy import load

    h = parsed({"w": tensor("F32", [4, 2], 0, 32), "__metadata__": {"k": "v"}}, 32)
    w = h.tensors[0]
    rows = np.arange(4, dtype=np.float32).reshape(2, 2)
    out = headers.render([(w, (2, 2), 16)], {"k": "v"})
    assert len(out) % 8 == 0
    assert np.array_equal(load(out + rows.tobytes())["w"], rows)


def two_d(rows: int, cols: int = 4, name: str = "w") -> headers.Header:
    return parsed({name: tensor("F32", [rows, cols], 0, rows * cols * 4)}, rows * cols * 4)


@pytest.mark.parametrize(("rows", "world"), [(10, 3), (2, 4), (7, 1), (8, 2), (0, 2)])
def test_shard_matches_numpy_array_split(rows: int, world: int) -> None:
    h = two_d(rows)
    full = np.arange(rows * 4).reshape(rows, 4)
    for rank in range(world):
        (want,) = choose(h, Selection.of(shard=(rank, world)))
        expected = np.array_split(full, world)[rank]
        assert want.shape == expected.shape
        first = (want.begin - h.tensors[0].begin) // 16
        assert np.array_equal(full[first : first + want.shape[0]], expected)


def test_rows_use_slice_rules_and_win_over_shard() -> None:
    h = parsed(
        {"w": tensor("F32", [10, 2], 0, 80), "b": tensor("F32", [10], 80, 120)},
        120,
    )
    w, b = choose(h, Selection.of(rows={"w": (-3, 100)}, shard=(0, 2)))
    assert (w.shape, (w.begin - h.length)) == ((3, 2), 56)
    assert (b.shape, b.nbytes) == ((5,), 20)
    (w,) = choose(h, Selection.of(tensors=["w"], rows={"w": (5, 2)}))
    assert w.shape == (0, 2)
    assert w.nbytes == 0


def test_zero_dim_tensors_are_kept_whole_by_a_shard() -> None:
    h = parsed({"s": tensor("F32", [], 0, 4)}, 4)
    (s,) = choose(h, Selection.of(shard=(1, 2)))
    assert s.shape == ()
    assert s.nbytes == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tensors": []},
        {"tensors": [""]},
        {"shard": (2, 2)},
        {"shard": (-1, 2)},
        {"shard": (0, 0)},
        {"shard": (0.0, 2)},
        {"rows": {"w": (1,)}},
        {"rows": {"w": ("a", 2)}},
    ],
)
def test_bad_selections_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(WregError) as info:
        Selection.of(**kwargs)
    assert info.value.code is ErrorCode.SELECTION_INVALID


def entry_of(sizes: list[int]) -> FileEntry:
    return FileEntry.of(
        "m.safetensors", [ChunkRef("blake3:" + f"{i:064x}", s) for i, s in enumerate(sizes)]
    )


def test_chunk_span_is_exactly_the_overlapping_chunks() -> None:
    e = entry_of([10, 10, 10, 10])
    starts = chunk_starts(e)
    assert list(chunk_span(e, 0, 8, starts)) == [0]
    assert list(chunk_span(e, 10, 20, starts)) == [1]
    assert list(chunk_span(e, 9, 21, starts)) == [0, 1, 2]
    assert list(chunk_span(e, 35, 40, starts)) == [3]
    assert list(chunk_span(e, 15, 15, starts)) == []
    # Brute force: a chunk is in the span exactly when it overlaps [begin, end).
    for begin in range(41):
        for end in range(begin, 41):
            got = set(chunk_span(e, begin, end, starts))
            overlapping = {i for i, s in enumerate(starts) if s < end and s + 10 > begin}
            assert got == (overlapping if end > begin else set())
