"""``wreg.core.diff``: files, tensors and bytes between two described manifests."""

from __future__ import annotations

from wreg.core.diff import Described, diff, tensor_changes
from wreg.core.digest import digest_bytes
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.core.tensors import FileDescription, ManifestDescription, TensorEntry


def chunk(tag: str, size: int) -> ChunkRef:
    return ChunkRef(digest_bytes(tag.encode()), size)


def tensor(
    name: str, content: str | None, dtype: str = "F32", shape: tuple[int, ...] = (4,)
) -> TensorEntry:
    digest = digest_bytes(content.encode()) if content is not None else None
    return TensorEntry(name, dtype, shape, 0, 16, 4, digest)


def described(ref: str, files: dict[str, tuple[list[ChunkRef], list[TensorEntry]]]) -> Described:
    entries = [FileEntry.of(path, chunks) for path, (chunks, _t) in files.items()]
    manifest = Manifest.build(entries)
    descs = tuple(
        FileDescription(
            e.path,
            e.size,
            e.digest,
            "safetensors" if files[e.path][1] else None,
            {},
            4 * len(files[e.path][1]),
            tuple(files[e.path][1]),
        )
        for e in manifest.files
    )
    description = ManifestDescription("m", manifest.digest, None, None, {}, descs)
    return Described(ref, manifest.digest, manifest, description)


def test_tensor_changes() -> None:
    a = tensor("t", "x")
    assert tensor_changes(a, a) == []
    assert tensor_changes(a, tensor("t", "y")) == ["content"]
    assert tensor_changes(a, tensor("t", "x", dtype="BF16")) == ["dtype"]
    assert tensor_changes(a, tensor("t", "z", shape=(2, 2))) == ["shape", "content"]
    # Without a digest on either side "unchanged" would be a guess: it is a change.
    assert tensor_changes(tensor("t", None), tensor("t", None)) == ["content"]


def test_files_tensors_and_bytes() -> None:
    header_a, header_b = chunk("ha", 100), chunk("hb", 104)
    big, small, tuned = chunk("big", 1000), chunk("small", 50), chunk("tuned", 1000)
    a = described(
        "m@a",
        {
            "w.safetensors": (
                [header_a, big, big, small],
                [tensor("x", "x"), tensor("y", "y"), tensor("gone", "g")],
            ),
            "config.json": ([chunk("cfg", 10)], []),
            "old.txt": ([chunk("old", 5)], []),
        },
    )
    b = described(
        "m@b",
        {
            "w.safetensors": (
                # big twice in B counts once in the bytes (distinct chunks)
                [header_b, big, tuned, small, tuned],
                [tensor("x", "x"), tensor("y", "y2"), tensor("new", "n")],
            ),
            "config.json": ([chunk("cfg", 10)], []),
            "new.txt": ([chunk("old", 5)], []),  # same bytes as old.txt, another path
        },
    )
    d = diff(a, b)
    assert d["a"] == {"reference": "m@a", "digest": a.digest}
    assert d["files"]["added"] == ["new.txt"]
    assert d["files"]["removed"] == ["old.txt"]
    assert d["files"]["unchanged"] == ["config.json"]
    (changed,) = d["files"]["changed"]
    assert changed["path"] == "w.safetensors"
    assert changed["size"] == [2150, 3154]
    t = changed["tensors"]
    assert (t["added"], t["removed"], t["unchanged"]) == (["new"], ["gone"], 1)
    assert [(c["name"], c["changes"]) for c in t["changed"]] == [("y", ["content"])]
    assert d["tensors"] == {"added": 1, "removed": 1, "changed": 1, "unchanged": 1}
    assert d["bytes_total"] == 3154 + 10 + 5
    # B's distinct chunks: hb 104, big 1000, tuned 1000, small 50, cfg 10, old 5.
    assert d["bytes_shared"] == 1000 + 50 + 10 + 5
    assert d["bytes_new"] == 104 + 1000


def test_identical_versions() -> None:
    a = described("m@a", {"w.safetensors": ([chunk("h", 8), chunk("t", 16)], [tensor("t", "t")])})
    d = diff(a, a)
    assert d["files"]["changed"] == d["files"]["added"] == d["files"]["removed"] == []
    assert d["tensors"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 1}
    assert (d["bytes_shared"], d["bytes_new"]) == (24, 0)
