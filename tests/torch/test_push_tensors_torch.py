"""``Client.push_tensors`` with torch tensors (CPU build), through a real wreg-server.

A checkpoint of torch tensors (the real MiniLM weights, some in bfloat16, a parameter
that requires grad, a transposed view) must push as the file ``safetensors.torch.save``
writes for it, with the manifest digest of pushing that file from disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import wreg
from wreg.core.errors import ErrorCode, InvalidInput, NotFound
from wreg.testing.realdata import WEIGHTS_FILE, base_model
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server") / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """The real model as torch tensors: layers 0-2 kept in F32, the rest cast to BF16, a
    transposed (non-contiguous) view, an nn.Parameter that requires grad, int64 and bool."""
    real = safetensors.torch.load_file(str(base_model() / WEIGHTS_FILE))
    out: dict[str, torch.Tensor] = {}
    for name, t in real.items():
        keep = t.dtype != torch.float32 or any(f"layer.{i}." in name for i in range(3))
        out[name] = t if keep else t.to(torch.bfloat16)
    query = real["encoder.layer.0.attention.self.query.weight"]
    out["extra.transposed"] = query.t()
    out["extra.parameter"] = torch.nn.Parameter(query[:8].clone(), requires_grad=True)
    out["extra.ids"] = torch.arange(100, dtype=torch.int64)
    out["extra.mask"] = query[:4] > 0
    return out


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}


def test_torch_checkpoint_round_trips_byte_equal_to_safetensors_torch(
    server: RunningServer, state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    assert not state["extra.transposed"].is_contiguous()
    assert any(t.dtype == torch.bfloat16 for t in state.values())
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    meta = {"step": 100, "run_id": "torch-run", "parent": None}
    result = client.push_tensors(
        state, "torch/push-tensors@step-100", metadata=meta, file_metadata={"format": "pt"}
    )
    expected = safetensors.torch.save(_contiguous(state), metadata={"format": "pt"})
    assert result.bytes_total == len(expected)

    client.pull("torch/push-tensors@step-100", tmp_path / "out")
    assert (tmp_path / "out" / WEIGHTS_FILE).read_bytes() == expected
    loaded = safetensors.torch.load_file(str(tmp_path / "out" / WEIGHTS_FILE))
    assert set(loaded) == set(state)
    for name, t in state.items():
        assert loaded[name].dtype == t.dtype, name
        assert torch.equal(loaded[name], t.detach()), name
    assert loaded["encoder.layer.5.output.dense.weight"].dtype == torch.bfloat16

    # The same manifest as pushing the file safetensors.torch writes, from disk.
    on_disk = tmp_path / "saved"
    on_disk.mkdir()
    safetensors.torch.save_file(
        _contiguous(state), str(on_disk / WEIGHTS_FILE), metadata={"format": "pt"}
    )
    os.chmod(on_disk / WEIGHTS_FILE, 0o644)
    from_disk = client.push(on_disk, "torch/push-tensors-disk@step-100", metadata=meta)
    assert from_disk.manifest == result.manifest
    assert from_disk.bytes_new == 0


def test_torch_and_numpy_mixed_and_bf16_as_ml_dtypes(
    server: RunningServer, state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    import ml_dtypes

    bf16 = state["encoder.layer.5.output.dense.weight"]
    as_numpy = bf16.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    a = client.push_tensors({"w": bf16}, "torch/push-tensors-mixed@torch")
    b = client.push_tensors({"w": as_numpy}, "torch/push-tensors-mixed@numpy")
    assert a.manifest == b.manifest  # the same bytes, labelled BF16 either way
    mixed = client.push_tensors(
        {"w": bf16, "n": np.arange(4, dtype=np.int32)}, "torch/push-tensors-mixed@both"
    )
    client.pull("torch/push-tensors-mixed@both", tmp_path / "out")
    loaded = safetensors.torch.load_file(str(tmp_path / "out" / WEIGHTS_FILE))
    assert torch.equal(loaded["w"], bf16)
    assert torch.equal(loaded["n"], torch.arange(4, dtype=torch.int32))
    assert mixed.files == 1


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        (torch.zeros(2, dtype=torch.complex128), "torch.complex128"),
        (torch.zeros(3, 3).to_sparse(), "sparse"),
        (torch.zeros(2, device="meta"), "meta"),
    ],
)
def test_unsupported_torch_tensors_are_refused_naming_the_key(
    server: RunningServer, tmp_path: Path, tensor: torch.Tensor, says: str
) -> None:
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInput) as caught:
        client.push_tensors({"bad.key": tensor}, "torch/push-tensors-bad@v1")
    assert caught.value.code is ErrorCode.TENSORS_UNSUPPORTED
    assert "'bad.key'" in str(caught.value)
    assert says in str(caught.value)
    with pytest.raises(NotFound):
        client.tags("torch/push-tensors-bad")


def test_a_lazily_conjugated_view_pushes_its_values(server: RunningServer, tmp_path: Path) -> None:
    c = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj()
    assert c.is_conj()
    client = wreg.Client(server.url, cache_dir=tmp_path / "cache")
    client.push_tensors({"c": c}, "torch/push-tensors-conj@v1")
    client.pull("torch/push-tensors-conj@v1", tmp_path / "out")
    got = (tmp_path / "out" / WEIGHTS_FILE).read_bytes()
    assert got == safetensors.torch.save({"c": c.resolve_conj()})
    assert torch.equal(safetensors.torch.load(got)["c"], c)
