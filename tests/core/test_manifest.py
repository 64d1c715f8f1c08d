import json

import pytest

from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode, InvalidInput
from wreg.core.manifest import ChunkRef, FileEntry, Manifest, canonical_json

D1, D2 = digest_bytes(b"1"), digest_bytes(b"2")


def _file(path: str, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, 3, D1, mode, (ChunkRef(D1, 1), ChunkRef(D2, 2)))


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
        (b'{"schema": 2, "files": []}', "MANIFEST_INVALID"),
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
