"""The pull's plan (``wreg._pull.plan``): plain data in, plain data out — no server, no
cache. What is resumed, what is seeded from where, what is fetched, and every place each
chunk is written to."""

from __future__ import annotations

from pathlib import Path

from wreg._cache import ChunkLocation
from wreg._pull.plan import FilePlan, Place, missing, pending_chunks, plan
from wreg.core.digest import digest_bytes
from wreg.core.manifest import ChunkRef, FileEntry


def chunk(name: str, size: int = 10) -> ChunkRef:
    return ChunkRef(digest_bytes(name.encode()), size)


def file(path: str, *chunks: ChunkRef) -> FileEntry:
    return FileEntry.of(path, chunks)


A, B, C, D = chunk("a", 10), chunk("b", 20), chunk("c", 30), chunk("d", 5)


def located(digest: str, length: int, trusted: bool = True) -> ChunkLocation:
    return ChunkLocation(Path("/cache/blobs") / digest[7:], 0, length, trusted)


def test_nothing_known_fetches_every_chunk_at_its_offset() -> None:
    p = plan([file("x", A, B, C)])
    assert p.fetches == [A.digest, B.digest, C.digest]
    assert p.places == {
        A.digest: [Place(0, 0, 0)],
        B.digest: [Place(0, 10, 1)],
        C.digest: [Place(0, 30, 2)],
    }
    assert p.sizes == {A.digest: 10, B.digest: 20, C.digest: 30}
    assert p.seeds == {}
    assert p.files == (FilePlan(file("x", A, B, C), frozenset(), 3),)
    assert p.complete == []
    assert p.resumed_bytes == 0


def test_resumed_chunks_are_neither_fetched_nor_seeded() -> None:
    x = file("x", A, B, C)
    p = plan([x], {x.digest: {0, 2}}, {A.digest: located(A.digest, 10)})
    assert p.fetches == [B.digest]
    assert p.places == {B.digest: [Place(0, 10, 1)]}
    assert p.seeds == {}  # A is resumed: where else it lies does not matter
    assert p.files[0].resumed == frozenset({0, 2})
    assert p.files[0].to_write == 1
    assert p.resumed_bytes == 40


def test_a_chunk_two_files_need_is_obtained_once_and_written_to_both() -> None:
    x, y = file("x", A, B), file("y", C, B)
    p = plan([x, y])
    assert p.fetches == [A.digest, B.digest, C.digest]  # manifest order, first use
    assert p.places[B.digest] == [Place(0, 10, 1), Place(1, 30, 1)]
    assert [f.to_write for f in p.files] == [2, 2]


def test_a_chunk_resumed_in_one_file_is_still_obtained_for_the_other() -> None:
    x, y = file("x", A, B), file("y", B)
    p = plan([x, y], {x.digest: {1}})
    assert p.places[B.digest] == [Place(1, 0, 0)]
    assert [f.to_write for f in p.files] == [1, 1]


def test_seeding_is_preferred_to_fetching() -> None:
    x = file("x", A, B, C)
    where = located(B.digest, 20, trusted=False)
    p = plan([x], located={B.digest: where, D.digest: located(D.digest, 5)})
    assert p.seeds == {B.digest: where}  # D is not needed: not seeded
    assert p.fetches == [A.digest, C.digest]
    assert p.places[B.digest] == [Place(0, 10, 1)]  # a seed that fails is fetched there


def test_a_chunk_repeated_within_a_file_is_obtained_once_for_every_offset() -> None:
    x = file("x", A, B, A, A)
    p = plan([x])
    assert p.fetches == [A.digest, B.digest]
    assert p.places[A.digest] == [Place(0, 0, 0), Place(0, 30, 2), Place(0, 40, 3)]
    assert p.files[0].to_write == 4
    p = plan([x], {x.digest: {0, 3}})
    assert p.places[A.digest] == [Place(0, 30, 2)]  # the copies not resumed, only
    assert p.files[0].to_write == 2


def test_an_empty_file_is_complete_at_once() -> None:
    empty = file("empty")
    p = plan([empty, file("x", A)])
    assert p.complete == [0]
    assert p.files[0] == FilePlan(empty, frozenset(), 0)
    assert p.fetches == [A.digest]


def test_a_file_resumed_whole_is_complete_and_fetches_nothing() -> None:
    x = file("x", A, B)
    p = plan([x], {x.digest: {0, 1}})
    assert p.complete == [0]
    assert p.places == {}
    assert p.fetches == []
    assert p.resumed_bytes == 30


def test_progress_beyond_the_file_is_ignored() -> None:
    x = file("x", A, B)
    p = plan([x], {x.digest: {1, 2, 99, -1}})
    assert p.files[0].resumed == frozenset({1})
    assert p.fetches == [A.digest]


def test_a_file_listed_twice_is_assembled_once() -> None:
    x = file("x", A)
    twin = FileEntry("copy/x", x.size, x.digest, x.mode, x.chunks)
    p = plan([x, twin])
    assert len(p.files) == 1
    assert p.places == {A.digest: [Place(0, 0, 0)]}


def test_missing_files_are_distinct_and_exclude_cached_blobs() -> None:
    x, y, z = file("x", A), file("y", B), file("z", C)
    twin = FileEntry("copy/y", y.size, y.digest, y.mode, y.chunks)
    assert missing([x, y, twin, z], {x.digest}) == [y, z]
    assert missing([x, y], {x.digest, y.digest}) == []


def test_pending_chunks_are_the_distinct_chunks_not_resumed() -> None:
    x, y = file("x", A, B, A), file("y", C, B)
    assert pending_chunks([x, y]) == [A.digest, B.digest, C.digest]
    assert pending_chunks([x, y], {x.digest: {0, 1, 2}, y.digest: {0}}) == [B.digest]
