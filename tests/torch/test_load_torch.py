"""Loading into torch (CPU build): tensors, dtype conversion, and the staging ring that
device loads use, against a real wreg-server on 127.0.0.1 and the real model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import wreg
from wreg._load.materialize import Staging
from wreg._load.produce import LoadStats, Ready, Source
from wreg.testing.realdata import WEIGHTS_FILE, base_model, variant
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    client = wreg.Client(running.url, cache_dir=tmp_path_factory.mktemp("push"))
    client.push(base_model(), "torch/fp32@v1")
    client.push(variant("bf16"), "torch/bf16@v1")
    yield running
    running.stop()


@pytest.mark.parametrize(("ref", "model"), [("torch/fp32@v1", "base"), ("torch/bf16@v1", "bf16")])
def test_torch_tensors_equal_safetensors_torch(
    server: RunningServer, tmp_path: Path, ref: str, model: str
) -> None:
    expected = load_file(str(variant(model) / WEIGHTS_FILE))
    got = wreg.Client(server.url, cache_dir=tmp_path / "cache").load(ref, framework="torch")
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert isinstance(got[name], torch.Tensor)
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name
    got[next(iter(got))].add_(1)  # writable: copy-on-write, never into the cache
    again = wreg.Client(server.url, cache_dir=tmp_path / "cache").load(ref, framework="torch")
    for name, tensor in expected.items():
        assert torch.equal(again[name], tensor), name


def test_dtype_converts_on_the_way(server: RunningServer, tmp_path: Path) -> None:
    expected = load_file(str(base_model() / WEIGHTS_FILE))
    got = wreg.Client(server.url, cache_dir=tmp_path / "cache").load(
        "torch/fp32@v1", framework="torch", device="cpu", dtype=torch.bfloat16, tensors="*.weight"
    )
    names = {n for n in expected if n.endswith(".weight")}
    assert set(got) == names
    for name in names:
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name], expected[name].to(torch.bfloat16)), name


def test_staging_ring_copies_every_tensor_piece_by_piece(
    server: RunningServer, tmp_path: Path
) -> None:
    """The path a CUDA load takes (read into a ring of host buffers, copy each piece to
    the device, reuse a buffer once its copy is done), run on the CPU with buffers far
    smaller than the tensors."""
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    items: list[Ready] = []
    sources: list[Source] = []
    asyncio.run(
        client._producer("torch/fp32@v1", None, None, (1, 3), (), (), None)(
            items.append, LoadStats(), sources
        )
    )
    staging = Staging(torch.device("cpu"), buffers=2, size=64 << 10)
    try:
        got = {r.want.info.name: staging.load(r) for r in items}
    finally:
        staging.close()
        for source in sources:
            source.close()
    expected = load_file(str(base_model() / WEIGHTS_FILE))
    assert set(got) == set(expected)
    big = 0
    for name, tensor in expected.items():
        part = torch.tensor_split(tensor, 3)[1] if tensor.dim() else tensor
        big += part.numel() * part.element_size() > 128 << 10
        assert torch.equal(got[name], part), name
    assert big > 10  # many tensors went through the ring in several pieces


def test_a_device_torch_cannot_reach_is_one_clear_error(
    server: RunningServer, tmp_path: Path
) -> None:
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    if not torch.cuda.is_available():
        with pytest.raises(wreg.WregError, match="no CUDA device"):
            client.load("torch/fp32@v1", framework="torch", device="cuda:0")
    with pytest.raises(wreg.WregError, match="device='gpu9'"):
        client.load("torch/fp32@v1", framework="torch", device="gpu9")
