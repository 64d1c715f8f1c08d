"""A training pipeline's checkpoints, end to end: pushed from memory, pruned by retention.

Three checkpoints of the real MiniLM weights are pushed with ``Client.push_tensors`` (no
file written) to a real server, a retention policy "keep the last 2 tagged ``step-*``,
never a ``release-*``" is set with ``wreg-server retention set``, and ``wreg-server gc``
runs on the server's data directory while the server keeps serving. What the policy keeps
must still pull byte for byte; what it drops must be gone, its unique chunks with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import safetensors.numpy

from tests.e2e.commands import run
from wreg import Client
from wreg.core.errors import NotFound
from wreg.testing.realdata import WEIGHTS_FILE, base_model, read_safetensors
from wreg.testing.servers import RunningServer

Arrays = dict[str, npt.NDArray[Any]]
STEPS = (100, 200, 300)


@pytest.fixture(scope="module")
def real() -> Arrays:
    tensors, _ = read_safetensors(base_model() / WEIGHTS_FILE)
    return {name: t.array() for name, t in tensors.items()}


def checkpoint(arrays: Arrays, step: int) -> Arrays:
    """The model after ``step``: one encoder layer per step made unique to this step."""
    layer = f"encoder.layer.{step // 100}."
    out = dict(arrays)
    for name, value in arrays.items():
        if name.startswith(layer) and value.dtype == np.float32:
            out[name] = value + np.float32(step) * np.float32(1e-3)
    return out


def server_cli(server: RunningServer, *args: str) -> str:
    done = run("wreg-server", *args, "--data", str(server.data), env=os.environ)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("protect_first", [False, True], ids=["plain", "protected"])
def test_three_checkpoints_retention_keeps_the_last_two(
    server: RunningServer, real: Arrays, tmp_path: Path, protect_first: bool
) -> None:
    repo = f"e2e/ckpt-retention-{'protected' if protect_first else 'plain'}"
    client = Client(server.url, cache_dir=tmp_path / "cache")
    pushed: dict[int, str] = {}
    parent: str | None = None
    for step in STEPS:
        meta: dict[str, Any] = {"step": step, "run_id": "run-7"}
        if parent is not None:
            meta["parent"] = parent
        result = client.push_tensors(checkpoint(real, step), f"{repo}@step-{step}", metadata=meta)
        pushed[step] = result.manifest
        parent = f"{repo}@{result.manifest}"
    if protect_first:  # a release tag on the oldest checkpoint: retention must keep it
        again = client.push_tensors(
            checkpoint(real, 100), f"{repo}@release-1", metadata={"step": 100, "run_id": "run-7"}
        )
        assert again.bytes_new == 0
        pushed[100] = again.manifest  # same tensors, but no parent in its metadata

    server_cli(server, "retention", "set", repo, "--keep", "2", "--match", "step-*",
               "--protect", "release-*")  # fmt: skip
    plan = json.loads(server_cli(server, "retention", "plan", repo, "--json"))
    planned = {d["digest"] for d in plan["delete"]}
    assert planned == (set() if protect_first else {pushed[100]})

    done = json.loads(server_cli(server, "gc", "--grace", "0", "--json"))
    deleted = {r["digest"] for r in done["retention"] if r["repository"] == repo}
    assert deleted == planned

    kept = set(STEPS) if protect_first else {200, 300}
    tags = {t["tag"]: t["digest"] for t in client.tags(repo)}
    assert {int(t.split("-")[1]) for t in tags if t.startswith("step-")} == kept
    if protect_first:
        assert tags["release-1"] == pushed[100]
    for step in kept:  # what is kept pulls byte for byte, metadata included
        out = client.pull(f"{repo}@step-{step}", tmp_path / f"out-{step}")
        assert (Path(out.path) / "model.safetensors").read_bytes() == safetensors.numpy.save(
            checkpoint(real, step)
        )
        assert client.inspect(f"{repo}@step-{step}")["metadata"]["step"] == step
    if not protect_first:
        with pytest.raises(NotFound):
            client.pull(f"{repo}@{pushed[100]}", tmp_path / "gone")
        # step-100's own layer (encoder.layer.1) was unique to it: its chunks were swept.
        assert done["chunks_deleted"] > 0
