"""Push and pull the real model through a real server: bytes, dedupe, compression."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from wreg import Client
from wreg.testing.realdata import base_model, changed_tensor_bytes, read_header, variant
from wreg.testing.servers import RunningServer


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_same_tree(a: Path, b: Path) -> None:
    names = _files(a)
    assert names == _files(b)
    _match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])


@pytest.fixture(scope="module")
def base() -> Path:
    return base_model()


def test_push_pull_round_trip_and_repush_sends_nothing(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    first = client.push(base, "e2e/minilm@v1")
    assert first.files == len(_files(base))
    assert first.bytes_total == sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
    assert first.bytes_new == first.bytes_total
    assert 0 < first.bytes_sent < first.bytes_total  # fp32 weights compress

    pulled = client.pull("e2e/minilm@v1", tmp_path / "out")
    assert pulled.manifest == first.manifest
    assert pulled.bytes_from_cache == 0
    assert_same_tree(base, tmp_path / "out")
    snapshot = Path(pulled.path)
    assert snapshot == tmp_path / "out"

    again = client.push(base, "e2e/minilm@v1")
    assert (again.bytes_new, again.bytes_sent, again.manifest) == (0, 0, first.manifest)

    # A second pull is served entirely by the node cache.
    warm = client.pull("e2e/minilm@v1", tmp_path / "out2")
    assert (warm.bytes_downloaded, warm.bytes_from_cache) == (0, warm.bytes_total)
    assert_same_tree(base, tmp_path / "out2")
    # By digest, too, and into the cache snapshot when no -o is given.
    by_digest = client.pull(f"e2e/minilm@{first.manifest}")
    assert_same_tree(base, Path(by_digest.path))


def test_finetune_sends_only_the_changed_tensors(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    client.push(base, "e2e/ft@base")
    tuned = variant("finetune")
    result = client.push(tuned, "e2e/ft@tuned")
    changed = changed_tensor_bytes(base, tuned)
    assert changed > 0
    assert abs(result.bytes_new - changed) <= 0.01 * changed, (result, changed)

    # Pulling the fine-tune on a node that has the base downloads only the changed chunks.
    client.pull("e2e/ft@base")
    pulled = client.pull("e2e/ft@tuned", tmp_path / "tuned")
    assert_same_tree(tuned, tmp_path / "tuned")
    assert pulled.bytes_downloaded <= result.bytes_sent
    assert pulled.bytes_from_cache >= pulled.bytes_total - result.bytes_new


def test_inserted_tensor_sends_little_more_than_the_tensor(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    client.push(base, "e2e/ins@base")
    inserted = variant("inserted")
    result = client.push(inserted, "e2e/ins@inserted")
    new_tensor = changed_tensor_bytes(base, inserted)
    header = read_header(inserted / "model.safetensors").data_start
    assert new_tensor > 0
    assert new_tensor <= result.bytes_new <= new_tensor + header + 64 * 1024


def test_bf16_copy_compresses(server: RunningServer, tmp_path: Path) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    bf16 = variant("bf16")
    result = client.push(bf16, "e2e/minilm@bf16")
    weights = (bf16 / "model.safetensors").stat().st_size
    assert result.bytes_sent < 0.72 * weights
    client.pull("e2e/minilm@bf16", tmp_path / "out")
    assert_same_tree(bf16, tmp_path / "out")
