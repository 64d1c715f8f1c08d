"""wreg.core.gguf against the reference reader (``gguf.GGUFReader``) and hostile headers,
and the chunk plan of GGUF files (``wreg.core.chunking``) on the real model as GGUF."""

from __future__ import annotations

import itertools
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from wreg.core.chunking import ChunkParams, ChunkSpec, plan_file
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode, WregError
from wreg.core.gguf import (
    GGML_TYPES,
    MAX_HEADER,
    METADATA_ARRAY_CAP,
    GgufLayout,
    NeedMoreBytes,
    load_gguf,
    parse_gguf,
    read_gguf_layout,
)
from wreg.core.sizes import CHUNK_MAX, CHUNK_PACK
from wreg.testing import realdata
from wreg.testing.realdata import GGUF_FILE, RealDataUnavailable


@pytest.fixture(scope="session")
def gguf_files() -> dict[str, Path]:
    """model.gguf of the base model and of its fine-tune (skip if the model is unavailable)."""
    try:
        return {
            "base": realdata.gguf_model() / GGUF_FILE,
            "finetune": realdata.gguf_variant("finetune") / GGUF_FILE,
        }
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")


# --------------------------------------------------------------------------- reference


def test_type_table_matches_gguf_constants() -> None:
    ref = {
        int(t): (t.name, block, size)
        for t, (block, size) in gguf.constants.GGML_QUANT_SIZES.items()
    }
    assert ref == GGML_TYPES


def _assert_agrees(layout: GgufLayout, path: Path) -> None:
    reader = gguf.GGUFReader(path)
    assert layout.header_len == reader.data_offset
    assert layout.alignment == reader.alignment
    assert len(layout.tensors) == len(reader.tensors)
    for mine, ref in zip(layout.tensors, reader.tensors, strict=True):
        assert mine.name == ref.name
        assert mine.type == ref.tensor_type.name
        assert mine.shape == tuple(int(d) for d in ref.shape)
        assert mine.begin == ref.data_offset
        assert mine.nbytes == ref.n_bytes == ref.data.nbytes
        assert mine.parameters == ref.n_elements
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(layout.metadata) == list(fields)
    for key, field in fields.items():
        value = layout.metadata[key]
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            n = len(field.data)
            if n > METADATA_ARRAY_CAP:
                assert value == {
                    "type": "array",
                    "item_type": field.types[-1].name,
                    "length": n,
                }, key
            else:
                assert value == field.contents(), key
        elif main == gguf.GGUFValueType.FLOAT32:
            assert np.float32(value) == np.float32(field.contents()), key
        else:
            assert value == field.contents(), key


def test_parser_agrees_with_reader_on_the_real_model(gguf_files: dict[str, Path]) -> None:
    layout = load_gguf(gguf_files["base"])
    assert layout.version == 3
    types = {t.type for t in layout.tensors}
    assert {"F32", "F16", "BF16", "Q8_0", "I64"} <= types
    assert layout.metadata["general.architecture"] == "bert"
    assert layout.metadata["tokenizer.ggml.tokens"] == {
        "type": "array",
        "item_type": "STRING",
        "length": 30522,
    }
    _assert_agrees(layout, gguf_files["base"])


def test_parser_agrees_with_reader_on_every_value_type(tmp_path: Path) -> None:
    """A file from the reference writer: every scalar type, short and long arrays, a big
    header (read in growing pieces), custom alignment and every type we can quantise."""
    path = tmp_path / "all.gguf"
    w = gguf.GGUFWriter(path, "test")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.short", [1, 2, 3])
    w.add_array("t.words", ["a", "bb", "ccc"])
    w.add_array("t.long_floats", [0.5] * 1000)
    # ~3 MiB of strings: more than load_gguf's first read
    w.add_array("t.vocab", [f"token-{i:07d}-" + "x" * 60 for i in range(30_000)])
    rng = np.random.default_rng(1)
    for i, qtype in enumerate(["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]):
        arr = rng.standard_normal((3, 512), dtype=np.float32)
        t = gguf.GGMLQuantizationType[qtype]
        if qtype == "F32":
            w.add_tensor(f"t{i}.{qtype}", arr)
        elif qtype == "F16":
            w.add_tensor(f"t{i}.{qtype}", arr.astype(np.float16))
        else:
            w.add_tensor(f"t{i}.{qtype}", gguf.quants.quantize(arr, t), raw_dtype=t)
    for qtype in ["Q4_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "TQ1_0", "MXFP4"]:
        t = gguf.GGMLQuantizationType[qtype]
        _, type_size = gguf.constants.GGML_QUANT_SIZES[t]
        blocks = rng.integers(0, 256, (2, 3 * type_size), dtype=np.uint8)  # opaque bytes
        w.add_tensor(f"raw.{qtype}", blocks, raw_dtype=t)
    w.add_tensor("odd", np.arange(7, dtype=np.int16))  # 14 bytes: padding follows
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    layout = load_gguf(path)
    assert layout.alignment == 64
    assert layout.header_len > 2 * 1024 * 1024
    assert layout.metadata["t.u64"] == 2**63 + 5
    assert layout.metadata["t.short"] == [1, 2, 3]
    _assert_agrees(layout, path)
    # read_gguf_layout is the same, and the plan starts a chunk at every tensor
    assert read_gguf_layout(path) == layout
    starts = {c.offset for c in plan_file(path, ChunkParams(chunk_pack=1))}
    assert {t.begin for t in layout.tensors} <= starts


def test_partial_head_asks_for_more(gguf_files: dict[str, Path]) -> None:
    data = gguf_files["base"].read_bytes()
    with pytest.raises(NeedMoreBytes) as exc:
        parse_gguf(data[:1000], len(data))
    assert 1000 < exc.value.needed <= len(data)
    assert parse_gguf(data[: load_gguf(gguf_files["base"]).header_len], len(data)).tensors


# --------------------------------------------------------------------------- hostile


def _s(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key.encode()) + struct.pack("<I", vtype) + payload


def _ti(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return (
        _s(name.encode())
        + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def _file(
    kvs: list[bytes],
    tis: list[bytes],
    data: bytes = b"",
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        len(tis) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    head += b"".join(kvs) + b"".join(tis)
    return head + b"\0" * (-len(head) % alignment) + data


_F32, _Q8_0 = 0, 8
_U32, _STRING, _ARRAY, _U8 = 4, 8, 9, 0
_NAME = _kv("general.name", _STRING, _s(b"tiny"))


def _valid() -> bytes:
    """Two F32 tensors (16 and 8 bytes), the second at the next aligned offset."""
    return _file(
        [_NAME, _kv("t.arr", _ARRAY, struct.pack("<IQ", _U8, 3) + b"\1\2\3")],
        [_ti("a", (4,), _F32, 0), _ti("b", (2,), _F32, 32)],
        b"\1" * 16 + b"\0" * 16 + b"\2" * 8 + b"\0" * 24,
    )


def test_the_crafted_file_is_valid_and_agrees(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(_valid())
    layout = load_gguf(path)
    assert [(t.name, t.begin, t.end) for t in layout.tensors] == [
        ("a", layout.header_len, layout.header_len + 16),
        ("b", layout.header_len + 32, layout.header_len + 40),
    ]
    _assert_agrees(layout, path)


_HOSTILE: dict[str, tuple[bytes, str]] = {
    "bad magic": (b"GGML" + _valid()[4:], "bad magic"),
    "version 1": (_file([], [], version=1), "unsupported GGUF version 1"),
    "version 4": (_file([], [], version=4), "unsupported GGUF version 4"),
    "big-endian": (
        b"GGUF" + struct.pack(">IQQ", 3, 0, 0),
        "big-endian",
    ),
    "huge tensor count": (_file([], [], n_tensors=2**63), "tensor count"),
    "huge kv count": (_file([], [], n_kv=2**64 - 1), "metadata count"),
    "huge key length": (struct.pack("<4sIQQQ", b"GGUF", 3, 0, 1, 2**62), "header"),
    "huge string value": (
        _file([_kv("k", _STRING, struct.pack("<Q", 150 * 1024 * 1024))], []),
        "header",
    ),
    "huge array": (_file([_kv("k", _ARRAY, struct.pack("<IQ", _U8, 2**60))], []), "array count"),
    "huge string array": (
        _file([_kv("k", _ARRAY, struct.pack("<IQ", _STRING, 2**40))], []),
        "array count",
    ),
    "deep arrays": (
        _file([_kv("k", _ARRAY, struct.pack("<IQIQIQ", _ARRAY, 1, _ARRAY, 1, _U8, 0))], []),
        "nests arrays",
    ),
    "unknown value type": (_file([_kv("k", 13, b"")], []), "unknown value type 13"),
    "duplicate key": (_file([_NAME, _NAME], []), "appears twice"),
    "bad alignment type": (
        _file([_kv("general.alignment", 10, struct.pack("<Q", 32))], []),
        "not a UINT32",
    ),
    "alignment not a power of two": (
        _file([_kv("general.alignment", _U32, struct.pack("<I", 48))], []),
        "power of two",
    ),
    "five dims": (_file([], [_ti("a", (1, 1, 1, 1, 1), _F32, 0)], b"\0" * 32), "dimensions"),
    "unknown ggml type": (_file([], [_ti("a", (4,), 99, 0)], b"\0" * 32), "unknown GGML type"),
    "row not a block multiple": (
        _file([], [_ti("a", (33,), _Q8_0, 0)], b"\0" * 128),
        "multiple of the Q8_0 block",
    ),
    "quantised scalar": (_file([], [_ti("a", (), _Q8_0, 0)], b"\0" * 64), "a row of 1"),
    "dimension past int64": (
        _file([], [_ti("a", (0, 2**63), _F32, 0)], b"\0" * 32),
        "2**63",
    ),
    "tensor past the end": (
        _file([], [_ti("a", (4,), _F32, 0), _ti("b", (1024,), _F32, 32)], b"\0" * 64),
        "past the end",
    ),
    "tensor offset huge": (_file([], [_ti("a", (4,), _F32, 2**63)], b"\0" * 32), "past the end"),
    "element count huge": (
        _file([], [_ti("a", (2**62, 2**62, 2**62, 2**62), _F32, 0)], b"\0" * 32),
        "past the end",
    ),
    "overlapping tensors": (
        _file([], [_ti("a", (16,), _F32, 0), _ti("b", (4,), _F32, 32)], b"\0" * 64),
        "overlap",
    ),
    "misaligned tensor": (_file([], [_ti("a", (4,), _F32, 4)], b"\0" * 64), "not aligned"),
    "duplicate tensor": (
        _file([], [_ti("a", (4,), _F32, 0), _ti("a", (4,), _F32, 32)], b"\0" * 64),
        "appears twice",
    ),
    "bad utf-8 name": (
        _file([], [_s(b"\xff\xfe") + struct.pack("<IQIQ", 1, 4, _F32, 0)], b"\0" * 32),
        "not UTF-8",
    ),
    "truncated": (_valid()[:50], "cannot fit"),
    "truncated in the tensor infos": (_valid()[:150], "truncated"),
}


@pytest.mark.parametrize("case", sorted(_HOSTILE))
def test_hostile_header_is_refused_quickly_in_bounded_memory(case: str, tmp_path: Path) -> None:
    raw, expected = _HOSTILE[case]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(WregError) as exc:
            parse_gguf(raw, len(raw))
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.code is ErrorCode.TENSORS_INVALID
    message = str(exc.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("gguf: ")
    assert elapsed < 0.5
    assert peak < 256 * 1024
    # from a file: the chunker's reader says None, and the file is cut by content instead
    path = tmp_path / "hostile.gguf"
    path.write_bytes(raw)
    assert read_gguf_layout(path) is None
    specs = plan_file(path)
    assert sum(c.length for c in specs) == len(raw)
    assert all(c.dtype is None for c in specs)


def test_header_longer_than_the_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A file whose metadata string is 150 MiB long: refused after one small read."""
    raw = _file([_kv("k", _STRING, struct.pack("<Q", 150 * 1024 * 1024))], [])
    path = tmp_path / "big.gguf"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(MAX_HEADER + 64 * 1024 * 1024)  # sparse
    tracemalloc.start()
    try:
        with pytest.raises(WregError, match="longer than"):
            load_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_every_truncation_of_a_valid_file_is_refused() -> None:
    raw = _valid()
    layout = parse_gguf(raw, len(raw))
    for n in range(layout.tensors[-1].end):
        with pytest.raises(WregError, match=r"truncated|past the end|cannot fit"):
            parse_gguf(raw[:n], n)


def test_every_single_byte_corruption_parses_or_is_refused_cleanly() -> None:
    """Flip each byte of a small valid file to a few values: a layout or a WregError,
    never another exception, and every layout still satisfies the invariants."""
    raw = _valid()
    codes: set[ErrorCode] = set()
    for i in range(len(raw)):
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            bad = raw[:i] + bytes([value]) + raw[i + 1 :]
            try:
                layout = parse_gguf(bad, len(bad))
            except WregError as exc:
                codes.add(exc.code)
                continue
            assert layout.header_len % layout.alignment == 0
            spans = sorted((t.begin, t.end) for t in layout.tensors)
            assert all(layout.header_len <= b <= e <= len(bad) for b, e in spans)
            assert all(e0 <= b1 for (_, e0), (b1, _) in itertools.pairwise(spans))
    assert codes == {ErrorCode.TENSORS_INVALID}


def test_empty_file_with_no_tensors_is_a_layout() -> None:
    raw = _file([_NAME], [])
    stripped = raw.rstrip(b"\0")
    assert parse_gguf(raw, len(raw)).header_len == len(raw)
    # the padding after the header may be missing when no tensor follows
    assert parse_gguf(stripped, len(stripped)).header_len == len(stripped)


# --------------------------------------------------------------------------- chunk plan


def _digests(path: Path, specs: list[ChunkSpec]) -> dict[int, tuple[str, int]]:
    data = path.read_bytes()
    return {c.offset: (digest_bytes(data[c.offset : c.offset + c.length]), c.length) for c in specs}


def test_plan_is_tensor_aligned(gguf_files: dict[str, Path]) -> None:
    path = gguf_files["base"]
    layout = load_gguf(path)
    specs = plan_file(path)
    # covers the file exactly, in order
    assert specs[0].offset == 0
    for prev, cur in itertools.pairwise(specs):
        assert cur.offset == prev.offset + prev.length
    assert specs[-1].offset + specs[-1].length == path.stat().st_size
    # the header (metadata, vocabulary, tensor infos, padding) is a chunk of its own
    assert specs[0] == ChunkSpec(0, layout.header_len, None)
    assert layout.header_len < CHUNK_MAX
    # every chunk starts at a tensor (or chunk_max into it): padding is never its own chunk
    begins = {t.begin for t in layout.tensors}
    by_start = {c.offset: c for c in specs}
    for c in specs[1:]:
        owner = max((t for t in layout.tensors if t.begin <= c.offset), key=lambda t: t.begin)
        assert c.offset in begins or (c.offset - owner.begin) % CHUNK_MAX == 0
    hint = {"F32": "F32", "F16": "F16", "BF16": "BF16"}
    for t in layout.tensors:
        if t.nbytes >= CHUNK_PACK:
            assert by_start[t.begin].dtype == hint.get(t.type), t.name
    word = next(t for t in layout.tensors if t.type == "Q8_0")
    pieces = [c for c in specs if word.begin <= c.offset < word.end]
    assert [c.offset - word.begin for c in pieces] == list(range(0, word.nbytes, CHUNK_MAX))
    assert all(c.dtype is None for c in pieces)


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def test_finetune_changes_only_the_named_tensors_and_their_chunks(
    gguf_files: dict[str, Path],
) -> None:
    base, tuned = gguf_files["base"], gguf_files["finetune"]
    old, new = _tensor_bytes(base), _tensor_bytes(tuned)
    changed = sorted(name for name in new if old[name] != new[name])
    assert changed == realdata.gguf_changed_tensors()
    changed_bytes = sum(len(new[name]) for name in changed)
    assert changed_bytes > 10 * 1024 * 1024
    layout = load_gguf(tuned)
    assert layout == load_gguf(base)  # same header, same offsets
    spans = [(t.begin, t.end) for t in layout.tensors if t.name in changed]
    old_chunks = _digests(base, plan_file(base))
    new_chunks = _digests(tuned, plan_file(tuned))
    assert old_chunks.keys() == new_chunks.keys()
    touched: Callable[[int, int], bool] = lambda offset, length: any(  # noqa: E731
        b < offset + length and offset < e for b, e in spans
    )
    fresh = 0
    for offset, (digest, length) in new_chunks.items():
        if touched(offset, length):
            assert digest != old_chunks[offset][0]
        else:
            assert digest == old_chunks[offset][0], offset
    known = {d for d, _ in old_chunks.values()}
    fresh = sum(length for digest, length in set(new_chunks.values()) if digest not in known)
    assert changed_bytes <= fresh <= 1.01 * changed_bytes


def test_gguf_model_holds_the_real_weights(gguf_files: dict[str, Path]) -> None:
    """Every tensor of the GGUF model is the safetensors tensor, in the type gguf_type names."""
    tensors, _ = realdata.read_safetensors(realdata.base_model() / realdata.WEIGHTS_FILE)
    reader = gguf.GGUFReader(gguf_files["base"])
    assert [t.name for t in reader.tensors] == list(tensors)
    for ref in reader.tensors:
        src = tensors[ref.name]
        kind = realdata.gguf_type(ref.name, src)
        assert ref.tensor_type.name == kind
        assert tuple(int(d) for d in ref.shape) == src.shape[::-1]
        raw = ref.data.tobytes()
        if kind in ("F32", "I64"):
            assert raw == src.data
        elif kind == "F16":
            assert raw == src.array().astype("<f2").tobytes()
        elif kind == "BF16":
            assert raw == realdata.f32_to_bf16(src.array()).tobytes()
        else:
            rows = src.array()[:2000]  # dequantising all 30522 rows takes seconds
            values = gguf.quants.dequantize(ref.data[:2000], ref.tensor_type)
            assert np.allclose(values, rows, atol=float(np.abs(rows).max()) / 100), ref.name


def test_gguf_variant_is_cached_and_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown GGUF variant"):
        realdata.gguf_variant("bf16", tmp_path)
    assert isinstance(realdata.gguf_changed_tensors(), list)
