import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode, InvalidInput
from wreg.core.manifest import ChunkRef, FileEntry, Manifest, canonical_json, identity_of

D1, D2 = digest_bytes(b"1"), digest_bytes(b"2")


def _file(path: str, mode: int = 0o644) -> FileEntry:
    return FileEntry.of(path, (ChunkRef(D1, 1), ChunkRef(D2, 2)), mode)


def test_canonical_bytes_and_digest_are_stable() -> None:
    m = Manifest.build([_file("b/x.bin"), _file("a.json")], {"framework": "pt"})
    data = m.to_json_bytes()
    assert data == canonical_json(json.loads(data))
    assert b" " not in data
    assert data.index(b'"files"') < data.index(b'"metadata"')
    assert [f.path for f in m.files] == ["a.json", "b/x.bin"]
    again = Manifest.from_json_bytes(data)
    assert again == m
    assert again.digest == m.digest == digest_bytes(data)
    assert m.chunk_digests() == {D1, D2}
    assert list(m.files[0].chunk_offsets()) == [(0, ChunkRef(D1, 1)), (1, ChunkRef(D2, 2))]


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/etc/x",
        "a/../../b",
        "",
        "a//b",
        "./a",
        "a/.",
        "C:/x",
        "a\\b",
        "con",
        "x/nul.txt",
        "a\x00b",
        "trailing.",
        "x\ny",
    ],
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.build([_file(path)])
    assert info.value.code is ErrorCode.PATH_UNSAFE


@pytest.mark.parametrize("paths", [["a", "a"], ["A.txt", "a.txt"], ["a", "a/b"]])
def test_conflicting_paths_are_rejected(paths: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.build([_file(p) for p in paths])
    assert info.value.code is ErrorCode.PATH_UNSAFE


def _doc(**file_fields: object) -> bytes:
    f = _file("a").to_json() | file_fields
    return json.dumps({"schema": 1, "files": [f], "metadata": {}}).encode()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", "MANIFEST_INVALID"),
        (b"[]", "MANIFEST_INVALID"),
        (b'{"schema": 3, "files": []}', "MANIFEST_INVALID"),
        (b'{"schema": 1, "files": [], "extra": 1}', "MANIFEST_INVALID"),
        (_doc(size=4), "MANIFEST_INVALID"),
        (_doc(size=-1), "MANIFEST_INVALID"),
        (_doc(mode=0o777), "MANIFEST_INVALID"),
        (_doc(digest="md5:abc"), "DIGEST_INVALID"),
        (_doc(chunks=[{"digest": "blake3:xyz", "size": 3}]), "DIGEST_INVALID"),
        (_doc(chunks=[{"digest": D1, "size": 0}, {"digest": D1, "size": 3}]), "MANIFEST_INVALID"),
        (b"\xff\xfe", "MANIFEST_INVALID"),
    ],
)
def test_malformed_manifests_are_rejected(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(data)
    assert info.value.code.name == code


def _manifest_bytes(files: list[dict[str, object]], **top: object) -> bytes:
    return json.dumps({"schema": 1, "files": files, "metadata": {}} | top).encode()


@pytest.mark.parametrize(
    "data",
    [
        _doc(mode=420.0),
        _doc(mode=493.0),
        _doc(size=3.0),
        _doc(size="3"),
        _doc(size=True),
        _doc(chunks=[{"digest": D1, "size": 1.0}, {"digest": D2, "size": 2}]),
        _doc(chunks=[{"digest": D1, "size": True}, {"digest": D2, "size": 2}]),
        _doc(chunks=[{"digest": D1, "size": "1"}, {"digest": D2, "size": 2}]),
        _manifest_bytes([], schema=1.0),
        _manifest_bytes([], schema=True),
        _manifest_bytes([], metadata=[]),
    ],
)
def test_fields_have_exact_json_types(data: bytes) -> None:
    """420.0 == 420 and True == 1 in Python; the manifest schema tells them apart."""
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(data)
    assert info.value.code is ErrorCode.MANIFEST_INVALID


@pytest.mark.parametrize(
    "paths",
    [["b", "a"], ["a/b", "a.txt"], ["z", "a", "m"], ["B", "A"], ["a/z", "a/b/c"]],
)
def test_files_out_of_path_order_are_rejected(paths: list[str]) -> None:
    """One content, one digest: the same files in another order are not another manifest."""
    data = canonical_json(
        {"schema": 1, "files": [_file(p).to_json() for p in paths], "metadata": {}}
    )
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(data)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert Manifest.build([_file(p) for p in paths]).files == tuple(_file(p) for p in sorted(paths))


@pytest.mark.parametrize(
    "path",
    [
        "a\u202eb",  # right-to-left override
        "a\u202ab",
        "a\u2066b",
        "a\u2069b",
        "a\u200bb",  # zero-width space
        "a\u200db",
        "a\u200fb",
        "\ufeffa",
        "a\u00adb",  # soft hyphen
        "a\u2028b",  # line separator
        "a\u2029b",
        "a\x7fb",
        "a\x85b",
        "a\ue000b",  # private use
        "a\U000e0001b",  # language tag
        "a\u0378b",  # unassigned
        "\u2024\u2024/x",  # one dot leader twice: looks like ..
        "\uff0e\uff0e/x",
        "a\u2215b",  # division slash
        "a\u2044b",  # fraction slash
        "a\uff0fb",
        "a\u29f8b",
        "a\ufe52b",
        "a\u3002b",
    ],
)
def test_invisible_bidi_and_lookalike_paths_are_rejected(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.build([_file(path)])
    assert info.value.code is ErrorCode.PATH_UNSAFE


@pytest.mark.parametrize("path", ["modèle/poids.bin", "模型/权重.safetensors", "a b/c-d_e.f"])
def test_ordinary_unicode_paths_are_accepted(path: str) -> None:
    assert Manifest.build([_file(path)]).files[0].path == path


def test_path_depth_is_capped() -> None:
    from wreg.core.sizes import MAX_PATH_DEPTH

    Manifest.build([_file("/".join(["d"] * MAX_PATH_DEPTH))])
    with pytest.raises(InvalidInput) as info:
        Manifest.build([_file("/".join(["d"] * (MAX_PATH_DEPTH + 1)))])
    assert info.value.code is ErrorCode.PATH_UNSAFE


def test_total_path_bytes_are_capped() -> None:
    from wreg.core.sizes import MAX_MANIFEST_PATH_BYTES, MAX_PATH_LENGTH

    length = MAX_PATH_LENGTH - 8
    count = MAX_MANIFEST_PATH_BYTES // length + 1
    files = [_file(f"{i:07d}" + "x" * (length - 7)).to_json() for i in range(count)]
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(canonical_json({"schema": 1, "files": files, "metadata": {}}))
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert "path bytes" in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"schema":1,"files":[],"metadata":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"schema":1,"files":[],"metadata":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
    ],
)
def test_deeply_nested_json_is_invalid_not_a_crash(data: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(data)
    assert info.value.code is ErrorCode.MANIFEST_INVALID


def test_moderately_nested_metadata_is_capped() -> None:
    from wreg.core.sizes import MAX_JSON_DEPTH

    def nested(depth: int) -> bytes:
        inner = b"[" * depth + b"]" * depth
        return b'{"schema":1,"files":[],"metadata":{"a":' + inner + b"}}"

    Manifest.from_json_bytes(nested(MAX_JSON_DEPTH - 2))  # document, metadata, arrays
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json_bytes(nested(MAX_JSON_DEPTH + 1))
    assert info.value.code is ErrorCode.MANIFEST_INVALID


def _tree_body(files: int, depth: int, segment: int = 15) -> bytes:
    """A manifest of ``files`` distinct paths, each ``depth`` segments of ``segment`` chars."""
    rest = ["s" * segment] * (depth - 1)
    paths = ["/".join([f"{i:08d}" + "s" * (segment - 8), *rest]) for i in range(files)]
    entry = {"size": 1, "digest": D1, "mode": 0o644, "chunks": [{"digest": D1, "size": 1}]}
    return canonical_json(
        {"schema": 1, "metadata": {}, "files": [{"path": p, **entry} for p in paths]}
    )


def _cpu_seconds(data: bytes) -> float:
    """The best of 5 parses, with the cyclic GC paused: its passes cost more the more
    objects are alive (other tests' too), which is no property of the validator."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            started = time.process_time()
            Manifest.from_json_bytes(data)
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best


@pytest.mark.parametrize(
    ("small", "large"),
    [((2000, 4), (16000, 4)), ((2000, 8), (2000, 64))],
    ids=["many-files", "deep-paths"],
)
def test_validation_cost_is_linear_in_path_bytes(
    small: tuple[int, int], large: tuple[int, int], tmp_path: Path
) -> None:
    """8x the path bytes costs at most 16x the CPU time, and the process's peak RSS grows
    by a small multiple of the body (the one timed assertion in the suite: the margin is wide)."""
    n, eight_n = _tree_body(*small), _tree_body(*large)
    assert len(eight_n) > 3 * len(n)
    ratio = _cpu_seconds(eight_n) / max(_cpu_seconds(n), 1e-4)
    assert ratio <= 16, f"8x the path bytes took {ratio:.1f}x the CPU time"
    grown = _rss_growth(eight_n, tmp_path)
    assert grown <= 24 * len(eight_n) + 16 * 1024 * 1024, f"RSS +{grown} for {len(eight_n)} bytes"


# Run in a fresh interpreter: the peak RSS the validation adds to one that has read the
# body (ru_maxrss only grows, so after minus before is the validation's own peak).
_RSS_PROBE = """
import resource, sys
from wreg.core.manifest import Manifest
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Manifest.from_json_bytes(data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def _rss_growth(data: bytes, tmp_path: Path) -> int:
    body = tmp_path / "manifest.json"
    body.write_bytes(data)
    done = subprocess.run(  # noqa: S603 - our own interpreter and probe
        [sys.executable, "-c", _RSS_PROBE, str(body)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout)


def test_schema_2_file_digests_are_chunk_list_identities() -> None:
    """A schema-2 file is named by its ordered chunk list: any other digest is refused,
    reordering the chunks changes it, and schema-1 manifests (content digests) still
    parse but are not built from chunks."""
    entry = _file("w.bin")
    assert entry.built_from_chunks
    assert entry.digest == identity_of(entry.chunks)
    swapped = FileEntry.of("w.bin", tuple(reversed(entry.chunks)))
    assert swapped.digest != entry.digest
    lying = FileEntry("w.bin", 3, digest_bytes(b"123"), 0o644, entry.chunks)
    with pytest.raises(InvalidInput, match="not the identity of its chunk list"):
        Manifest.build([lying])
    v1 = Manifest.build([lying], schema=1)
    assert v1.schema == 1
    assert json.loads(v1.to_json_bytes())["schema"] == 1
    assert not v1.files[0].built_from_chunks
    assert Manifest.from_json_bytes(v1.to_json_bytes()) == v1
    # Domain-separated from content hashes: the bytes the identity hashes are not it.
    packed = b"".join(
        bytes.fromhex(c.digest[7:]) + c.size.to_bytes(8, "little") for c in entry.chunks
    )
    assert digest_bytes(packed) != entry.digest
