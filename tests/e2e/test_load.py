"""Loading tensors straight from a real wreg-server (127.0.0.1) and the node cache."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import wreg
from tests.e2e.commands import one_line_error
from tests.e2e.commands import wreg as wreg_cli
from tests.e2e.proxy import Proxy, proxy
from wreg.core.chunking import plan_file
from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.errors import ErrorCode, IntegrityError, WregError
from wreg.testing.realdata import WEIGHTS_FILE, base_model, bf16_to_f32, variant
from wreg.testing.servers import RunningServer


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real model (fp32) and its bf16 variant, pushed once for the module."""
    cache = tmp_path_factory.mktemp("push-cache")
    client = wreg.Client(server.url, cache_dir=cache)
    models = {"load/fp32@v1": base_model(), "load/bf16@v1": variant("bf16")}
    for ref, path in models.items():
        client.push(path, ref)
    return models


@pytest.fixture
def counted(server: RunningServer) -> Iterator[Proxy]:
    """A proxy counting chunk GETs per digest (batches off: every chunk is one GET)."""
    with proxy(server.url) as p:
        yield p


def raw_tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype, shape, bytes), read with nothing but json and struct."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    doc = json.loads(data[8 : 8 + n])
    doc.pop("__metadata__", None)
    return {
        name: (
            t["dtype"],
            t["shape"],
            data[8 + n + t["data_offsets"][0] : 8 + n + t["data_offsets"][1]],
        )
        for name, t in doc.items()
    }


def chunk_hexes_overlapping(path: Path, ranges: list[tuple[int, int]]) -> set[str]:
    """The digests (hex) of the file's chunks that overlap any byte range, computed from
    the chunker and the file's bytes alone."""
    data = path.read_bytes()
    out = set()
    for spec in plan_file(path):
        if any(spec.offset < end and spec.offset + spec.length > begin for begin, end in ranges):
            out.add(digest_bytes(data[spec.offset : spec.offset + spec.length]))
    return out


def tensor_ranges(path: Path, names: set[str]) -> list[tuple[int, int]]:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    doc = json.loads(data[8 : 8 + n])
    return [(0, 8 + n)] + [
        (8 + n + t["data_offsets"][0], 8 + n + t["data_offsets"][1])
        for name, t in doc.items()
        if name in names
    ]


def test_load_equals_load_file_for_fp32_and_bf16(
    pushed: dict[str, Path], server: RunningServer, tmp_path: Path
) -> None:
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    fp32 = client.load("load/fp32@v1")
    expected = load_file(str(pushed["load/fp32@v1"] / WEIGHTS_FILE))
    assert set(fp32) == set(expected)
    for name, array in expected.items():
        assert fp32[name].dtype == array.dtype
        assert fp32[name].shape == array.shape
        assert np.array_equal(fp32[name], array), name
    bf16 = client.load("load/bf16@v1")
    raw = raw_tensors(pushed["load/bf16@v1"] / WEIGHTS_FILE)
    assert set(bf16) == set(raw)
    assert sum(dtype == "BF16" for dtype, _, _ in raw.values()) > 90
    for name, (dtype, shape, data) in raw.items():
        got = bf16[name]
        assert got.shape == tuple(shape)
        assert got.tobytes() == data, name
        if dtype == "BF16":
            assert got.dtype == np.dtype(ml_dtypes.bfloat16)
            bits = np.frombuffer(data, np.uint16).reshape(shape)
            assert np.array_equal(got.astype(np.float32), bf16_to_f32(bits))
    assert "torch" not in sys.modules  # numpy loads never import torch


def test_full_load_leaves_the_model_warm_in_the_node_cache(
    pushed: dict[str, Path], counted: Proxy, tmp_path: Path
) -> None:
    client = wreg.Client(counted.url, cache_dir=tmp_path / "cache")
    stream = client.stream("load/fp32@v1")
    first = set(name for name, _ in stream)
    cold = counted.served
    assert cold > 0
    assert stream.stats.bytes_fetched == stream.stats.bytes_model  # every file, config too
    again = wreg.Client(counted.url, cache_dir=tmp_path / "cache")
    second = again.stream("load/fp32@v1")
    assert set(name for name, _ in second) == first
    assert counted.served == cold  # nothing fetched again
    assert second.stats.bytes_from_cache == second.stats.bytes_tensors
    offline = wreg.Client(counted.url, cache_dir=tmp_path / "cache", offline=True)
    assert set(offline.load("load/fp32@v1")) == first
    pulled = again.pull("load/fp32@v1")  # the snapshot is complete: a no-op pull
    assert pulled.bytes_downloaded == 0


def test_stream_yields_each_tensor_once_while_the_download_goes_on(
    pushed: dict[str, Path], counted: Proxy, tmp_path: Path
) -> None:
    counted.delay = 0.01
    client = wreg.Client(counted.url, cache_dir=tmp_path / "cache", concurrency=2)
    expected = load_file(str(pushed["load/fp32@v1"] / WEIGHTS_FILE))
    seen: list[str] = []
    served_at_first = None
    with client.stream("load/fp32@v1") as stream:
        for name, array in stream:
            if served_at_first is None:
                served_at_first = counted.served
            assert np.array_equal(array, expected[name])
            seen.append(name)
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    assert served_at_first is not None
    assert served_at_first < counted.served / 4  # the first tensor came early


def test_a_corrupt_chunk_stops_its_tensor_and_nothing_wrong_is_yielded(
    server: RunningServer, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    rng = np.random.default_rng(7)
    tensors = {f"t{i}": rng.standard_normal((64, 1024)).astype(np.float32) for i in range(8)}
    save_file(tensors, str(model / WEIGHTS_FILE))
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    client.push(model, "load/corrupt@v1")
    victim = "t3"  # 256 KiB: one chunk of its own
    key = digest_bytes(tensors[victim].tobytes()).split(":")[1]
    (stored,) = [p for p in (server.data / "objects").rglob(key) if p.is_file()]
    # A well-formed chunk of other bytes: only the digest check can tell.
    stored.write_bytes(encode_chunk(np.zeros_like(tensors[victim]).tobytes(), "F32"))
    fresh = wreg.Client(server.url, cache_dir=tmp_path / "cache2")
    yielded: dict[str, Any] = {}
    with pytest.raises(IntegrityError, match="does not match its digest"):  # noqa: PT012
        for name, array in fresh.stream("load/corrupt@v1"):
            yielded[name] = array
    assert victim not in yielded
    for name, array in yielded.items():
        assert np.array_equal(array, tensors[name])
    # The registry served bad bytes: the partial file is dropped, as a pull drops it.
    assert list((tmp_path / "cache2" / "tmp").glob("*.part")) == []


def test_selection_fetches_only_the_chunks_it_needs_and_a_pull_completes_it(
    pushed: dict[str, Path], counted: Proxy, tmp_path: Path
) -> None:
    path = pushed["load/fp32@v1"] / WEIGHTS_FILE
    expected = load_file(str(path))
    client = wreg.Client(counted.url, cache_dir=tmp_path / "cache")
    stream = client.stream("load/fp32@v1", tensors=["*layer.1.attention.*"])
    got = dict(stream)
    names = {n for n in expected if ".layer.1.attention." in n}
    assert set(got) == names
    for name in names:
        assert np.array_equal(got[name], expected[name])
    wanted = chunk_hexes_overlapping(path, tensor_ranges(path, names))
    assert set(counted.gets) == wanted
    assert set(counted.gets.values()) == {1}
    assert stream.stats.bytes_tensors == sum(expected[n].nbytes for n in names)
    # A later pull resumes from the partial file: no chunk crosses the wire twice.
    pulled = client.pull("load/fp32@v1")
    assert pulled.bytes_resumed > 0
    assert set(counted.gets.values()) == {1}
    assert client.load("load/fp32@v1", tensors="*layer.1.attention.*").keys() == names


def test_shard_fetches_the_rows_of_its_rank_exactly(
    server: RunningServer, counted: Proxy, tmp_path: Path
) -> None:
    model = tmp_path / "wide"
    model.mkdir()
    rng = np.random.default_rng(3)
    tensors = {
        "a.weight": rng.standard_normal((4096, 1024)).astype(np.float32),  # 4 chunks
        "c.weight": rng.standard_normal((3000, 1024)).astype(np.float32),  # 3, cut mid-chunk
        "norm": rng.standard_normal((1024,)).astype(np.float32),
        "scale": np.array(2.5, dtype=np.float32),
    }
    path = model / WEIGHTS_FILE
    save_file(tensors, str(path))
    wreg.Client(server.url, cache_dir=tmp_path / "push").push(model, "load/wide@v1")
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    doc = json.loads(data[8 : 8 + n])
    specs = plan_file(path)
    for rank in range(2):
        counted.gets.clear()
        client = wreg.Client(counted.url, cache_dir=tmp_path / f"rank{rank}")
        stream = client.stream("load/wide@v1", shard=(rank, 2))
        got = dict(stream)
        ranges = {"header": (0, 8 + n)}
        for name, full in tensors.items():
            part = np.array_split(full, 2)[rank] if full.ndim else full
            assert np.array_equal(got[name], part), name
            begin, end = (8 + n + o for o in doc[name]["data_offsets"])
            if full.ndim:
                rows = np.array_split(np.arange(full.shape[0]), 2)[rank]
                row = full.nbytes // full.shape[0]
                begin, end = begin + int(rows[0]) * row, begin + (int(rows[-1]) + 1) * row
            ranges[name] = (begin, end)
        assert set(counted.gets) == chunk_hexes_overlapping(path, list(ranges.values()))
        assert set(counted.gets.values()) == {1}
        for name in ("a.weight", "c.weight"):  # at most one chunk beyond the rows' bytes
            begin, end = ranges[name]
            over = [s for s in specs if s.offset < end and s.offset + s.length > begin]
            assert sum(s.length for s in over) <= end - begin + max(s.length for s in specs)
        begin, end = ranges["a.weight"]
        a_chunks = [s for s in specs if s.offset < end and s.offset + s.length > begin]
        assert sum(s.length for s in a_chunks) <= 0.55 * tensors["a.weight"].nbytes
        assert stream.stats.bytes_fetched < 0.62 * sum(t.nbytes for t in tensors.values())


def test_dtypes_zero_dim_and_empty_tensors_and_metadata(
    server: RunningServer, tmp_path: Path
) -> None:
    model = tmp_path / "odd"
    model.mkdir()
    tensors: dict[str, np.ndarray[Any, Any]] = {
        "f16": np.arange(6, dtype=np.float16).reshape(2, 3),
        "f64": np.linspace(0, 1, 5),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "u8": np.arange(7, dtype=np.uint8),
        "flag": np.array([True, False, True]),
        "scalar": np.array(7, dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, str(model / "odd.safetensors"), metadata={"format": "np"})
    (model / "notes.txt").write_text("not tensors")
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    client.push(model, "load/odd@v1")
    got = client.load("load/odd@v1")
    assert set(got) == set(tensors)
    for name, array in tensors.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert np.array_equal(got[name], array), name
    out = tmp_path / "out"
    result = client.pull_tensors("load/odd@v1", out, tensors=["f*", "scalar"])
    written = load_file(str(out / "odd.safetensors"))
    assert set(written) == {"f16", "f64", "flag", "scalar"}
    for name, array in written.items():
        assert np.array_equal(array, tensors[name])
    from safetensors import safe_open

    with safe_open(str(out / "odd.safetensors"), "np") as f:
        assert f.metadata() == {"format": "np"}
    assert (out / "notes.txt").read_text() == "not tensors"  # other files pass through
    assert result["tensors"] == 4


def test_bad_requests_are_one_clear_error(
    pushed: dict[str, Path], server: RunningServer, tmp_path: Path
) -> None:
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(WregError) as info:
        client.load("load/fp32@v1", tensors=["no.such.*"])
    assert info.value.code is ErrorCode.SELECTION_INVALID
    with pytest.raises(WregError) as info:
        client.load("load/fp32@v1", include=["*.json"])
    assert info.value.code is ErrorCode.TENSORS_UNSUPPORTED
    with pytest.raises(WregError) as info:
        client.load("load/fp32@v1", framework="jax")
    assert info.value.code is ErrorCode.SELECTION_INVALID
    with pytest.raises(WregError) as info:
        client.load("load/fp32@v1", shard=(2, 2))
    assert info.value.code is ErrorCode.SELECTION_INVALID


def test_cli_pull_tensors_writes_files_safetensors_opens(
    pushed: dict[str, Path], client_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = wreg_cli(
        "pull", "load/fp32@v1", "--tensors", "*layer.0.*", "--tensors", "*embeddings*",
        "-o", str(out), "--json", env=client_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = load_file(str(pushed["load/fp32@v1"] / WEIGHTS_FILE))
    names = {n for n in expected if ".layer.0." in n or "embeddings" in n}
    written = load_file(str(out / WEIGHTS_FILE))
    assert set(written) == names
    for name in names:
        assert np.array_equal(written[name], expected[name])
    assert report["bytes_model"] > report["bytes_fetched"] >= report["bytes_tensors"]
    assert report["bytes_tensors"] == sum(expected[n].nbytes for n in names)
    assert (out / "config.json").read_bytes() == (
        pushed["load/fp32@v1"] / "config.json"
    ).read_bytes()
    assert not [p for p in out.rglob(".*wreg-*")]  # no staging file left
    one_line_error(
        wreg_cli("pull", "load/fp32@v1", "--tensors", "*", env=client_env), "give -o DIR"
    )
    one_line_error(
        wreg_cli(
            "pull", "load/fp32@v1", "--shard", "2/2", "-o", str(tmp_path / "x"), env=client_env
        ),
        "rank < world_size",
    )
    again = wreg_cli(
        "pull", "load/fp32@v1", "--tensors", "*layer.0.*", "-o", str(out), env=client_env
    )
    one_line_error(again, "exists")
    assert os.path.exists(out / WEIGHTS_FILE)


def test_bytes_downloaded_counts_every_chunk_on_the_wire(
    pushed: dict[str, Path], server: RunningServer, tmp_path: Path
) -> None:
    """Every encoded byte fetched is counted once (concurrent fetches used to lose
    updates: ``stats.received += await ...`` reads the counter before the await)."""
    model = pushed["load/fp32@v1"]
    digests: set[str] = set()
    for f in model.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for spec in plan_file(f):
                digests.add(digest_bytes(data[spec.offset : spec.offset + spec.length]))
    stored = {p.name: p.stat().st_size for p in (server.data / "objects").rglob("*") if p.is_file()}
    expected = sum(stored[d.split(":")[1]] for d in digests)
    stream = wreg.Client(server.url, cache_dir=tmp_path / "a").stream("load/fp32@v1")
    for _ in stream:
        pass
    assert stream.stats.bytes_downloaded == expected
    pulled = wreg.Client(server.url, cache_dir=tmp_path / "b").pull("load/fp32@v1")
    assert pulled.bytes_downloaded == expected


def test_closing_a_stream_early_stops_the_download_and_keeps_what_landed(
    pushed: dict[str, Path], counted: Proxy, tmp_path: Path
) -> None:
    counted.delay = 0.02
    client = wreg.Client(counted.url, cache_dir=tmp_path / "cache", concurrency=2)
    stream = client.stream("load/fp32@v1")
    name, array = next(stream)
    stream.close()  # cancels the producer and waits for it
    served = counted.served
    chunks = len(plan_file(pushed["load/fp32@v1"] / WEIGHTS_FILE))
    assert served < chunks
    assert array.nbytes > 0
    assert name
    time.sleep(0.3)
    assert counted.served == served  # nothing more is fetched after close
    pulled = client.pull("load/fp32@v1")  # resumes: what landed is not fetched again
    assert pulled.bytes_resumed > 0
    fresh = wreg.Client(counted.url, cache_dir=tmp_path / "fresh").pull("load/fp32@v1")
    assert pulled.chunks_downloaded < fresh.chunks_downloaded
