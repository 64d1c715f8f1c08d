import json
import os
import struct
from pathlib import Path

from wreg.core.chunking import ChunkParams, plan_file


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, bytes]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        dtype, data = tensors[name]
        header[name] = {
            "dtype": dtype,
            "shape": [len(data) // 4],
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    body = b"".join(tensors[n][1] for n in sorted(tensors))
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def _ranges(path: Path, params: ChunkParams) -> list[bytes]:
    data = path.read_bytes()
    specs = plan_file(path, params)
    assert sum(s.length for s in specs) == len(data)
    assert [s.offset for s in specs] == [
        sum(s.length for s in specs[:i]) for i in range(len(specs))
    ]
    return [data[s.offset : s.offset + s.length] for s in specs]


def test_safetensors_cut_at_tensor_starts_survive_shifts(tmp_path: Path) -> None:
    params = ChunkParams(chunk_max=4096, chunk_pack=256)
    big = os.urandom(10_000)
    tensors = {
        "b.big": ("F32", big),
        "c.small1": ("F32", b"s" * 64),
        "d.small2": ("F32", b"t" * 64),
    }
    _write_safetensors(tmp_path / "a.safetensors", tensors)
    _write_safetensors(tmp_path / "b.safetensors", {**tensors, "a.new": ("F32", os.urandom(1000))})
    a = _ranges(tmp_path / "a.safetensors", params)
    b = _ranges(tmp_path / "b.safetensors", params)
    # header, big tensor in 3 pieces of <= 4096 from its own start, small tensors packed
    assert a[1:4] == [big[:4096], big[4096:8192], big[8192:]]
    assert a[4] == b"s" * 64 + b"t" * 64
    assert set(a[1:]) <= set(b)  # only the header changes when a tensor is inserted
    specs = plan_file(tmp_path / "a.safetensors", params)
    assert specs[0].dtype is None
    assert specs[1].dtype == "F32"


def test_invalid_safetensors_falls_back_to_cdc(tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 10**9) + os.urandom(3_000_000))
    params = ChunkParams(cdc_avg=65536, cdc_min=16384, cdc_max=262144)
    chunks = _ranges(p, params)
    assert len(chunks) > 10
    assert max(map(len, chunks)) <= 262144


def test_cdc_resynchronises_after_an_insertion(tmp_path: Path) -> None:
    params = ChunkParams(cdc_avg=65536, cdc_min=16384, cdc_max=262144)
    data = os.urandom(4_000_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.bin").write_bytes(data[:1000] + b"inserted" + data[1000:])
    a, b = _ranges(tmp_path / "a.bin", params), _ranges(tmp_path / "b.bin", params)
    shared = sum(len(c) for c in set(a) & set(b))
    assert shared > 0.9 * len(data)


def test_small_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "s").write_bytes(b"x" * 100)
    assert plan_file(tmp_path / "e") == []
    assert [(s.offset, s.length) for s in plan_file(tmp_path / "s")] == [(0, 100)]
