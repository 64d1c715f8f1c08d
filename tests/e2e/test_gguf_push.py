"""Push and pull the real model as GGUF through a real server: tensor-aligned dedupe."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from wreg import Client
from wreg.core.gguf import load_gguf
from wreg.testing import realdata
from wreg.testing.realdata import GGUF_FILE, RealDataUnavailable
from wreg.testing.servers import RunningServer


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    try:
        return {"base": realdata.gguf_model(), "finetune": realdata.gguf_variant("finetune")}
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")


def _changed_tensor_bytes(base: Path, tuned: Path) -> int:
    """Data bytes of the tensors that differ, by the reference reader."""
    old = {t.name: t.data.tobytes() for t in gguf.GGUFReader(base).tensors}
    new = {t.name: t.data.tobytes() for t in gguf.GGUFReader(tuned).tensors}
    changed = sorted(name for name, data in new.items() if old.get(name) != data)
    assert changed == realdata.gguf_changed_tensors()
    return sum(len(new[name]) for name in changed)


def test_gguf_finetune_uploads_only_the_changed_tensors(
    server: RunningServer, models: dict[str, Path], tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    base_file = models["base"] / GGUF_FILE
    first = client.push(models["base"], "e2e/gguf@base")
    assert first.files == 1
    assert first.bytes_total == first.bytes_new == base_file.stat().st_size
    layout = load_gguf(base_file)
    # one chunk for the header, then tensor-aligned chunks (several per big tensor)
    assert first.chunks_total > len([t for t in layout.tensors if t.nbytes >= 64 * 1024])
    assert first.bytes_sent < first.bytes_total  # F32/F16 planes compress

    tuned = client.push(models["finetune"], "e2e/gguf@tuned")
    changed = _changed_tensor_bytes(base_file, models["finetune"] / GGUF_FILE)
    assert changed > 10 * 1024 * 1024
    assert changed <= tuned.bytes_new <= 1.01 * changed, (tuned, changed)
    assert tuned.chunks_new < tuned.chunks_total

    # Pull the fine-tune back on a fresh node: byte-identical.
    fresh = Client(server.url, cache_dir=tmp_path / "fresh-cache")
    pulled = fresh.pull("e2e/gguf@tuned", tmp_path / "out")
    assert pulled.manifest == tuned.manifest
    out = tmp_path / "out" / GGUF_FILE
    assert out.read_bytes() == (models["finetune"] / GGUF_FILE).read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [GGUF_FILE]

    # On a node that holds the base, the fine-tune costs only its changed chunks.
    client.pull("e2e/gguf@base")
    again = client.pull("e2e/gguf@tuned", tmp_path / "tuned")
    assert (tmp_path / "tuned" / GGUF_FILE).read_bytes() == out.read_bytes()
    assert again.bytes_from_cache >= again.bytes_total - tuned.bytes_new
