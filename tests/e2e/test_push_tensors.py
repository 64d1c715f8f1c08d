"""``Client.push_tensors``: checkpoints pushed from memory through a real server.

The checkpoints are the real MiniLM tensors (``wreg.testing.realdata``) as in-memory numpy
arrays, with encoder layers changed from one training "step" to the next, the way a
fine-tuning run changes some tensors and leaves the rest. What is pushed must be the
file ``safetensors.numpy.save`` writes, cut into the chunks a push of that file from disk
gives, so the manifest digest is the same either way and an unchanged tensor is never
sent twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import safetensors.numpy

from wreg import Client
from wreg._push_tensors import TensorFile, collect
from wreg.core.errors import ErrorCode, IntegrityError, InvalidInput, NotFound, WregError
from wreg.core.sizes import CHUNK_PACK
from wreg.testing.realdata import WEIGHTS_FILE, base_model, read_safetensors
from wreg.testing.servers import RunningServer

Arrays = dict[str, npt.NDArray[Any]]
REPO = "e2e/push-tensors"


@pytest.fixture(scope="module")
def base() -> Path:
    return base_model()


@pytest.fixture(scope="module")
def real(base: Path) -> tuple[Arrays, dict[str, str]]:
    """The real model's tensors as numpy arrays (read-only views of the file's bytes),
    and its ``__metadata__``."""
    tensors, metadata = read_safetensors(base / WEIGHTS_FILE)
    return {name: t.array() for name, t in tensors.items()}, metadata


def _layer(step: int) -> str | None:
    """The encoder layer a training step changed: step 200 layer 5, step 300 layer 4."""
    return {200: "encoder.layer.5.", 300: "encoder.layer.4."}.get(step)


def checkpoint(arrays: Arrays, step: int) -> Arrays:
    """The model after ``step``: the layers changed by this and earlier steps perturbed
    (deterministically), every other tensor the very array of the real model."""
    out = dict(arrays)
    for earlier in range(200, step + 1, 100):
        layer = _layer(earlier)
        assert layer is not None
        for name, arr in arrays.items():
            if layer in name and arr.dtype == np.float32:
                out[name] = (arr + np.float32(earlier * 1e-4)).astype(np.float32)
    return out


def tag_names(client: Client, repo: str) -> set[str]:
    try:
        return {t["tag"] for t in client.tags(repo)}
    except NotFound:
        return set()


def manifest(server: RunningServer, ref: str) -> dict[str, Any]:
    name, _, version = ref.partition("@")
    r = httpx.get(f"{server.url}/v1/repositories/{name}/manifests/{version}")
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def changed(old: Mapping[str, npt.NDArray[Any]], new: Mapping[str, npt.NDArray[Any]]) -> list[str]:
    return [n for n in new if n not in old or not np.array_equal(old[n], new[n])]


def test_three_checkpoints_round_trip_and_send_only_what_changed(
    server: RunningServer, real: tuple[Arrays, dict[str, str]], tmp_path: Path
) -> None:
    arrays, file_metadata = real
    client = Client(server.url, cache_dir=tmp_path / "cache")
    previous: Arrays | None = None
    parent: str | None = None
    for step in (100, 200, 300):
        ckpt = checkpoint(arrays, step)
        ref = f"{REPO}@step-{step}"
        laid_out = TensorFile(collect(ckpt), file_metadata)
        assert laid_out.copied_bytes == 0  # every tensor is read where it lies
        name = "embeddings.word_embeddings.weight"
        begin = next(r.begin for r in laid_out.ranges if r.end - r.begin == ckpt[name].nbytes)
        piece = laid_out.view(len(laid_out.header) + begin, 4096)
        assert np.shares_memory(np.frombuffer(piece, np.uint8), ckpt[name])
        metadata = {"step": step, "run_id": "run-e2e", "parent": parent, "lr": [1e-4, 0.5]}
        result = client.push_tensors(ckpt, ref, metadata=metadata, file_metadata=file_metadata)
        expected = safetensors.numpy.save(ckpt, metadata=file_metadata)

        assert result.reference == ref
        assert result.files == 1
        assert result.bytes_total == len(expected)
        assert result.bytes_hashed == len(expected)
        assert result.skipped == []

        # Pulled back: the very bytes safetensors writes, loading as the same arrays.
        out = tmp_path / f"out-{step}"
        client.pull(ref, out)
        assert sorted(p.name for p in out.iterdir()) == [WEIGHTS_FILE]
        pulled = (out / WEIGHTS_FILE).read_bytes()
        assert pulled == expected
        loaded = safetensors.numpy.load_file(str(out / WEIGHTS_FILE))
        assert set(loaded) == set(ckpt)
        for name, arr in ckpt.items():
            assert loaded[name].dtype == arr.dtype, name
            assert np.array_equal(loaded[name], arr), name

        # Metadata round-trips in the manifest, by tag and by digest alike.
        doc = manifest(server, ref)
        assert doc["metadata"] == metadata
        assert manifest(server, f"{REPO}@{result.manifest}") == doc
        assert [f["path"] for f in doc["files"]] == [WEIGHTS_FILE]

        if previous is None:
            assert result.chunks_new == result.chunks_total  # a fresh repository
            assert result.bytes_new == len(expected)
        else:
            names = changed(previous, ckpt)
            layer = _layer(step)
            assert layer is not None
            assert names
            assert all(layer in n for n in names)
            changed_bytes = sum(ckpt[n].nbytes for n in names)
            header = len(TensorFile(collect(ckpt), file_metadata).header)
            small = sum(1 for n in names if ckpt[n].nbytes < CHUNK_PACK)
            # Every changed byte is new; beyond them at most the header chunk and the
            # unchanged neighbours packed with a changed small tensor.
            assert changed_bytes <= result.bytes_new <= changed_bytes + header + small * CHUNK_PACK
            assert result.bytes_new < len(expected) // 5
            assert 0 < result.bytes_sent < len(expected) // 5
        previous, parent = ckpt, ref

    assert {"step-100", "step-200", "step-300"} <= tag_names(client, REPO)
    again = client.push_tensors(
        checkpoint(arrays, 300), f"{REPO}@again", file_metadata=file_metadata
    )
    assert again.bytes_new == 0
    assert again.bytes_sent == 0


def test_same_manifest_as_pushing_the_saved_files_from_disk(
    server: RunningServer, base: Path, real: tuple[Arrays, dict[str, str]], tmp_path: Path
) -> None:
    arrays, file_metadata = real
    ckpt = checkpoint(arrays, 200)
    config = (base / "config.json").read_bytes()
    on_disk = tmp_path / "saved"
    on_disk.mkdir()
    safetensors.numpy.save_file(ckpt, str(on_disk / WEIGHTS_FILE), metadata=file_metadata)
    (on_disk / "config.json").write_bytes(config)
    for p in on_disk.iterdir():
        os.chmod(p, 0o644)
    meta = {"step": 200, "run_id": "run-disk", "parent": f"{REPO}@step-100"}

    client = Client(server.url, cache_dir=tmp_path / "cache")
    from_disk = client.push(on_disk, "e2e/push-tensors-disk@step-200", metadata=meta)
    from_memory = client.push_tensors(
        ckpt,
        "e2e/push-tensors-memory@step-200",
        metadata=meta,
        file_metadata=file_metadata,
        files={"config.json": config},
    )
    assert from_memory.manifest == from_disk.manifest
    assert from_memory.files == 2
    assert from_memory.bytes_total == from_disk.bytes_total
    assert from_memory.chunks_total == from_disk.chunks_total
    assert from_memory.bytes_new == 0  # the disk push stored every chunk already

    # Without file metadata, too (the header is a different length, the tensors' chunks
    # are the same ones), and under another file name.
    plain = tmp_path / "plain"
    plain.mkdir()
    safetensors.numpy.save_file(ckpt, str(plain / "weights.safetensors"))
    os.chmod(plain / "weights.safetensors", 0o644)
    disk = client.push(plain, "e2e/push-tensors-disk@plain")
    memory = client.push_tensors(
        ckpt, "e2e/push-tensors-memory@plain", filename="weights.safetensors"
    )
    assert memory.manifest == disk.manifest
    assert memory.bytes_new <= len(TensorFile(collect(ckpt)).header)


def test_non_contiguous_big_endian_and_odd_dtypes_match_safetensors(
    server: RunningServer, real: tuple[Arrays, dict[str, str]], tmp_path: Path
) -> None:
    import ml_dtypes

    arrays, _ = real
    embeddings = arrays["embeddings.word_embeddings.weight"]
    tensors: Arrays = {
        "transposed": arrays["encoder.layer.0.attention.self.query.weight"].T,
        "strided": embeddings[::7, ::3],
        "big_endian": embeddings[:64].astype(">f4"),
        "bf16": embeddings[:128].astype(ml_dtypes.bfloat16),
        "scalar": np.array(3.5, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.float16),
        "flags": embeddings[:32] > 0,
        "ids": np.arange(512, dtype=np.int64),
        'naïve "name"\n': np.ones(3, dtype=np.uint8),
    }
    # Only the arrays that are not contiguous little-endian already are copied.
    laid_out = TensorFile(collect(tensors))
    copies = ("transposed", "strided", "big_endian")
    assert laid_out.copied_bytes == sum(tensors[n].nbytes for n in copies)
    client = Client(server.url, cache_dir=tmp_path / "cache")
    result = client.push_tensors(tensors, "e2e/push-tensors-odd@v1", metadata={"step": 1})
    client.pull("e2e/push-tensors-odd@v1", tmp_path / "out")
    expected = safetensors.numpy.save(
        {k: np.ascontiguousarray(v) if v.ndim else v for k, v in tensors.items()}
    )
    assert (tmp_path / "out" / WEIGHTS_FILE).read_bytes() == expected
    assert result.bytes_total == len(expected)
    loaded = safetensors.numpy.load_file(str(tmp_path / "out" / WEIGHTS_FILE))
    assert loaded["bf16"].dtype == ml_dtypes.bfloat16 or loaded["bf16"].dtype.name == "bfloat16"
    for name, arr in tensors.items():
        assert np.array_equal(loaded[name], arr), name
    doc = manifest(server, "e2e/push-tensors-odd@v1")
    header_len = int.from_bytes(expected[:8], "little")
    header = json.loads(expected[8 : 8 + header_len])
    assert header["bf16"]["dtype"] == "BF16"
    assert doc["files"][0]["size"] == len(expected)


def _deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"x": doc}
    return doc


@pytest.mark.parametrize(
    ("tensors", "kwargs", "code", "says"),
    [
        ({"w": [1.0, 2.0]}, {}, ErrorCode.TENSORS_UNSUPPORTED, "'w'"),
        ({"w": np.float32(1.0)}, {}, ErrorCode.TENSORS_UNSUPPORTED, "numpy.float32"),
        ({7: np.zeros(3)}, {}, ErrorCode.TENSORS_INVALID, "not int (7)"),
        ({"obj": np.array([object()], dtype=object)}, {}, ErrorCode.TENSORS_UNSUPPORTED, "'obj'"),
        ({"c128": np.zeros(2, np.complex128)}, {}, ErrorCode.TENSORS_UNSUPPORTED, "complex128"),
        ({"s": np.array(["a"])}, {}, ErrorCode.TENSORS_UNSUPPORTED, "'s'"),
        ({"__metadata__": np.zeros(1)}, {}, ErrorCode.TENSORS_INVALID, "__metadata__"),
        ({"w": np.zeros(1)}, {"metadata": {"step": {1, 2}}}, ErrorCode.MANIFEST_INVALID, "set"),
        (
            {"w": np.zeros(1)},
            {"metadata": {"loss": float("nan")}},
            ErrorCode.MANIFEST_INVALID,
            "nan",
        ),
        ({"w": np.zeros(1)}, {"metadata": {1: "x"}}, ErrorCode.MANIFEST_INVALID, "key 1"),
        (
            {"w": np.zeros(1)},
            {"metadata": {"blob": "x" * (2 << 20)}},
            ErrorCode.MANIFEST_INVALID,
            "over the limit",
        ),
        ({"w": np.zeros(1)}, {"metadata": _deep(40)}, ErrorCode.MANIFEST_INVALID, "deeper"),
        (
            {"w": np.zeros(1)},
            {"file_metadata": {"a": 1}},
            ErrorCode.TENSORS_INVALID,
            "strings to strings",
        ),
        ({"w": np.zeros(1)}, {"filename": "../model.safetensors"}, ErrorCode.PATH_UNSAFE, ".."),
        ({"w": np.zeros(1)}, {"filename": "model.bin"}, ErrorCode.PATH_UNSAFE, ".safetensors"),
        (
            {"w": np.zeros(1)},
            {"files": {"config.json": "{}"}},
            ErrorCode.TENSORS_UNSUPPORTED,
            "bytes",
        ),
        ({"w": np.zeros(1)}, {"files": {"/etc/passwd": b""}}, ErrorCode.PATH_UNSAFE, "passwd"),
        (
            {"w": np.zeros(1)},
            {"files": {"model.safetensors/config.json": b"{}"}},
            ErrorCode.PATH_UNSAFE,
            "inside another file",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_committed(
    server: RunningServer,
    tmp_path: Path,
    tensors: dict[Any, Any],
    kwargs: dict[str, Any],
    code: ErrorCode,
    says: str,
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInput) as caught:
        client.push_tensors(tensors, "e2e/push-tensors-bad@v1", **kwargs)
    assert caught.value.code is code
    message = str(caught.value)
    assert says in message
    assert "\n" not in message.strip()
    assert tag_names(client, "e2e/push-tensors-bad") == set()


def test_a_digest_reference_is_refused(server: RunningServer, tmp_path: Path) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(WregError) as caught:
        client.push_tensors({"w": np.zeros(1)}, "e2e/push-tensors-bad@blake3:" + "0" * 64)
    assert caught.value.code in {ErrorCode.REFERENCE_INVALID, ErrorCode.DIGEST_INVALID}


class _ChangeWhenUploading:
    """A progress sink that writes to the checkpoint once hashing has finished: the
    training loop stepping its optimizer before the push returned."""

    def __init__(self, arr: npt.NDArray[np.float32]) -> None:
        self.arr = arr

    def start(self, description: str, total: int) -> None:
        if description == "uploading":
            self.arr += 1

    def advance(self, amount: int) -> None:
        pass


def test_an_array_changed_during_the_push_fails_it_and_commits_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    arr = np.random.default_rng(7).standard_normal((512, 512)).astype(np.float32)
    client = Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(IntegrityError) as caught:
        client.push_tensors(
            {"w": arr}, "e2e/push-tensors-racy@v1", progress=_ChangeWhenUploading(arr)
        )
    assert caught.value.code is ErrorCode.DIGEST_MISMATCH
    assert "changed while being pushed" in str(caught.value)
    assert tag_names(client, "e2e/push-tensors-racy") == set()
