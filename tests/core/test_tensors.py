"""``wreg.core.tensors``: layouts from header bytes, tensor pieces and tensor digests, and
the strict parse of a description a registry sends."""

from __future__ import annotations

import struct
from typing import Any

import blake3
import pytest

from wreg.core.chunking import plan_file
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode, WregError
from wreg.core.sizes import CHUNK_PACK
from wreg.core.tensors import (
    MAX_DESCRIBED_HEADER,
    TENSOR_DIGEST_CONTEXT,
    FileDescription,
    ManifestDescription,
    NeedMoreBytes,
    TensorEntry,
    format_of,
    parse_layout,
    tensor_digest,
    tensor_pieces,
    unverifiable,
)
from wreg.testing import realdata


def test_format_of() -> None:
    assert format_of("a/model.safetensors") == "safetensors"
    assert format_of("Model.GGUF") == "gguf"
    assert format_of("config.json") is None
    assert format_of("safetensors") is None


def test_safetensors_layout_matches_the_real_header() -> None:
    path = realdata.base_model() / realdata.WEIGHTS_FILE
    raw = path.read_bytes()
    header = realdata.read_header(path)
    with pytest.raises(NeedMoreBytes) as more:
        parse_layout("safetensors", raw[:4], len(raw))
    assert more.value.needed == 8
    with pytest.raises(NeedMoreBytes) as more:
        parse_layout("safetensors", raw[:8], len(raw))
    length = more.value.needed
    layout = parse_layout("safetensors", raw[:length], len(raw))
    assert layout.header_len == length
    assert {t.name for t in layout.tensors} == set(header.tensors)
    for t in layout.tensors:
        info = header.tensors[t.name]
        assert (t.dtype, list(t.shape)) == (info.dtype, list(info.shape))
        assert (t.begin, t.end) == (header.data_start + info.start, header.data_start + info.end)
    assert layout.metadata == header.metadata
    assert [t.begin for t in layout.tensors] == sorted(t.begin for t in layout.tensors)
    assert layout.parameters == sum(t.parameters for t in layout.tensors)


def test_gguf_layout_of_the_real_gguf_model() -> None:
    from gguf import GGUFReader

    path = realdata.gguf_model() / realdata.GGUF_FILE
    raw = path.read_bytes()
    layout = None
    head = 1 << 10
    while layout is None:  # grow as the server does
        try:
            layout = parse_layout("gguf", raw[:head], len(raw))
        except NeedMoreBytes as more:
            head = max(more.needed, 2 * head)
    reader = GGUFReader(path)
    assert {t.name: t.dtype for t in layout.tensors} == {
        t.name: t.tensor_type.name for t in reader.tensors
    }
    assert layout.metadata["general.name"] == realdata.GGUF_NAME


@pytest.mark.parametrize(
    "head",
    [
        struct.pack("<Q", MAX_DESCRIBED_HEADER + 8) + b"{}",  # past inspect's cap
        struct.pack("<Q", 1 << 50) + b"{}",  # past the format's
        struct.pack("<Q", 2) + b"[]",  # not an object
        struct.pack("<Q", 40)
        + b'{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}'[:40],  # cut JSON
    ],
)
def test_bad_safetensors_headers_are_one_line_errors(head: bytes) -> None:
    with pytest.raises(WregError) as err:
        parse_layout("safetensors", head, MAX_DESCRIBED_HEADER * 2, "m.safetensors")
    assert err.value.code in (ErrorCode.TENSORS_INVALID, ErrorCode.TENSORS_UNSUPPORTED)
    assert "\n" not in err.value.message


def test_gguf_header_past_the_cap_is_refused_before_reading_it() -> None:
    # One metadata string claiming more than inspect reads: refused, not read.
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + b"key"
    head += struct.pack("<IQ", 8, MAX_DESCRIBED_HEADER + 1)
    with pytest.raises(WregError) as err:
        parse_layout("gguf", head, 4 * MAX_DESCRIBED_HEADER, "m.gguf")
    assert "larger than inspect reads" in err.value.message


def _chunks(sizes: list[int]) -> tuple[list[int], list[tuple[str, int]]]:
    starts, at = [], 0
    for s in sizes:
        starts.append(at)
        at += s
    return starts, [(digest_bytes(bytes([i]) * s), s) for i, s in enumerate(sizes)]


def test_pieces_cut_a_range_at_chunk_boundaries() -> None:
    starts, chunks = _chunks([100, 1000, 1000, 30])
    whole = tensor_pieces(starts, chunks, 100, 2100)
    assert [(p.index, p.start, p.length, p.whole) for p in whole] == [
        (1, 0, 1000, True),
        (2, 0, 1000, True),
    ]
    packed = tensor_pieces(starts, chunks, 2110, 2120)
    assert [(p.index, p.start, p.length, p.whole) for p in packed] == [(3, 10, 10, False)]
    across = tensor_pieces(starts, chunks, 50, 1200)
    assert [(p.index, p.start, p.length) for p in across] == [
        (0, 50, 50),
        (1, 0, 1000),
        (2, 0, 100),
    ]
    assert tensor_pieces(starts, chunks, 500, 500) == []


def test_tensor_digest_is_the_keyed_hash_of_its_pieces() -> None:
    a, b = b"x" * 70, b"y" * 30
    pieces = [(digest_bytes(a), 70), (digest_bytes(b), 30)]
    packed = b"".join(bytes.fromhex(d[7:]) + n.to_bytes(8, "little") for d, n in pieces)
    expected = (
        "blake3:" + blake3.blake3(packed, derive_key_context=TENSOR_DIGEST_CONTEXT).hexdigest()
    )
    assert tensor_digest(pieces) == expected
    assert tensor_digest(pieces) != tensor_digest([(digest_bytes(a + b), 100)])  # cut matters
    assert tensor_digest(pieces) != digest_bytes(a + b)  # never a plain content hash
    assert tensor_digest([]) == tensor_digest([])


def test_real_model_chunks_make_big_tensors_whole_and_small_ones_packed() -> None:
    """On wreg's own chunking of the real file, every tensor of at least CHUNK_PACK bytes
    is whole chunks (its digest needs no byte) and only packed ones need reading."""
    path = realdata.base_model() / realdata.WEIGHTS_FILE
    raw = path.read_bytes()
    specs = plan_file(path)
    starts = [s.offset for s in specs]
    chunks = [(digest_bytes(raw[s.offset : s.offset + s.length]), s.length) for s in specs]
    layout = parse_layout("safetensors", raw[: specs[0].length], len(raw))
    assert layout.header_len == specs[0].length  # the header is its own chunk
    for t in layout.tensors:
        pieces = tensor_pieces(starts, chunks, t.begin, t.end)
        assert sum(p.length for p in pieces) == t.nbytes
        if t.nbytes >= CHUNK_PACK:
            assert all(p.whole for p in pieces), t.name
        elif t.nbytes:
            (piece,) = pieces  # one piece of one packed chunk: the tensor's own bytes
            assert (piece.at + piece.start, piece.length) == (t.begin, t.nbytes)
            assert piece.size <= CHUNK_PACK


def _description() -> dict[str, Any]:
    return {
        "name": "m",
        "digest": digest_bytes(b"m"),
        "created_at": "2026-12-02T00:00:00+00:00",
        "pushed_by": None,
        "metadata": {},
        "files": [
            {
                "path": "w.safetensors",
                "size": 120,
                "digest": digest_bytes(b"f"),
                "format": "safetensors",
                "metadata": {"format": "pt"},
                "parameters": 4,
                "tensors": [
                    {
                        "name": "t",
                        "dtype": "F32",
                        "shape": [2, 2],
                        "offset": 104,
                        "nbytes": 16,
                        "parameters": 4,
                        "digest": digest_bytes(b"t"),
                    }
                ],
            }
        ],
        "totals": {"files": 1, "bytes": 120, "tensors": 1, "parameters": 4},
    }


def test_description_round_trips() -> None:
    doc = _description()
    assert ManifestDescription.from_json(doc).to_json() == doc


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("files", 0, "size"), -1),
        (("files", 0, "digest"), "sha256:00"),
        (("files", 0, "format"), "pickle"),
        (("files", 0, "tensors"), {}),
        (("files", 0, "tensors", 0, "shape"), [1] * 17),
        (("files", 0, "tensors", 0, "shape"), [True]),
        (("files", 0, "tensors", 0, "digest"), 7),
        (("files", 0, "tensors", 0, "nbytes"), 1.5),
        (("metadata",), []),
        (("pushed_by",), 3),
    ],
)
def test_malformed_descriptions_are_refused(where: tuple[Any, ...], value: Any) -> None:
    doc = _description()
    target: Any = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(WregError) as err:
        ManifestDescription.from_json(doc)
    assert err.value.code is ErrorCode.BODY_INVALID


def test_file_without_format_has_no_error_key() -> None:
    f = FileDescription("config.json", 3, digest_bytes(b"c"), None, {}, 0, ())
    assert "error" not in f.to_json()
    assert FileDescription.from_json(f.to_json()) == f


def test_a_client_checks_whole_chunk_digests_against_the_manifest() -> None:
    _starts, chunks = _chunks([100, 1000, 30])
    right = tensor_digest([(chunks[1][0], 1000)])
    packed = digest_bytes(b"anything")  # inside a packed chunk: taken on trust

    def file(*tensors: TensorEntry) -> FileDescription:
        return FileDescription(
            "w.safetensors", 1130, digest_bytes(b"f"), "safetensors", {}, 0, tensors
        )

    good = file(
        TensorEntry("big", "F32", (250,), 100, 1000, 250, right),
        TensorEntry("small", "F32", (2,), 1110, 8, 2, packed),
    )
    assert unverifiable(good, chunks) == []
    lying = file(TensorEntry("big", "F32", (250,), 100, 1000, 250, packed))
    assert unverifiable(lying, chunks) == ["big"]
    outside = file(TensorEntry("far", "F32", (250,), 1000, 1000, 250, right))
    assert unverifiable(outside, chunks) == ["far"]
