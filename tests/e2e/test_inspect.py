"""``wreg inspect`` / ``wreg diff`` end to end, on the real model and its finetune.

Against a real ``wreg-server``: what inspect reports agrees with the ``safetensors`` and
``gguf`` packages' own readers; diff names exactly the tensors the finetune changed and
the bytes its push uploaded; and neither downloads a chunk (the server's metrics count
no chunk read, the node cache stays empty).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.commands import one_line_error, wreg
from tests.e2e.test_auth_cli import create_token
from wreg import Client
from wreg._results import PushResult
from wreg.core.errors import AuthError, NotFound
from wreg.testing import realdata
from wreg.testing.servers import RunningServer, start_server

REPO = "inspect/minilm"
BASE, TUNED = f"{REPO}@base", f"{REPO}@finetune"


class Pushed:
    def __init__(self, server: RunningServer, root: Path) -> None:
        self.server = server
        self.cache = root / "push-cache"
        client = Client(server.url, cache_dir=self.cache)
        self.base_dir = realdata.base_model()
        self.tuned_dir = realdata.variant("finetune")
        self.base: PushResult = client.push(self.base_dir, BASE)
        self.tuned: PushResult = client.push(self.tuned_dir, TUNED)


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    return Pushed(server, tmp_path_factory.mktemp("inspect"))


@pytest.fixture
def reader(server: RunningServer, tmp_path: Path) -> Client:
    """A client with a node cache of its own (that must stay empty)."""
    return Client(server.url, cache_dir=tmp_path / "cache")


def chunk_reads(server: RunningServer) -> float:
    """Requests the server answered on any chunk route, from its metrics."""
    with urllib.request.urlopen(f"{server.url}/metrics") as r:  # noqa: S310 - our server
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("wreg_http_requests_total{") and "chunks" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_inspect_agrees_with_safetensors(pushed: Pushed, reader: Client) -> None:
    from safetensors import safe_open

    doc = reader.inspect(BASE)
    assert doc["name"] == REPO
    assert doc["digest"] == pushed.base.manifest
    assert doc["pushed_by"] is None  # auth off: no token name
    assert doc["created_at"]
    path = pushed.base_dir / realdata.WEIGHTS_FILE
    (weights,) = [f for f in doc["files"] if f["path"] == realdata.WEIGHTS_FILE]
    assert weights["format"] == "safetensors"
    assert "error" not in weights
    assert weights["size"] == path.stat().st_size
    with safe_open(str(path), "np") as f:
        keys = sorted(f.keys())
        assert sorted(t["name"] for t in weights["tensors"]) == keys
        by_name = {t["name"]: t for t in weights["tensors"]}
        for key in keys:
            piece = f.get_slice(key)
            assert by_name[key]["dtype"] == piece.get_dtype()
            assert by_name[key]["shape"] == list(piece.get_shape())
            array = f.get_tensor(key)
            assert by_name[key]["nbytes"] == array.nbytes
            assert by_name[key]["parameters"] == array.size
        assert weights["metadata"] == (f.metadata() or {})
    # offsets: the tensor's bytes in the real file
    raw = path.read_bytes()
    for t in weights["tensors"][:5]:
        with safe_open(str(path), "np") as f:
            assert raw[t["offset"] : t["offset"] + t["nbytes"]] == f.get_tensor(t["name"]).tobytes()
    assert all(t["digest"] and t["digest"].startswith("blake3:") for t in weights["tensors"])
    others = [f for f in doc["files"] if f["path"] != realdata.WEIGHTS_FILE]
    assert others
    assert all(f["format"] is None and f["tensors"] == [] for f in others)
    totals = doc["totals"]
    assert totals["files"] == len(doc["files"])
    assert totals["bytes"] == pushed.base.bytes_total
    assert totals["tensors"] == len(keys)
    assert (
        totals["parameters"] == weights["parameters"] == sum(by_name[k]["parameters"] for k in keys)
    )
    # Unchanged tensors keep their digest across versions; by digest == by tag.
    tuned = reader.inspect(f"{REPO}@{pushed.tuned.manifest}")
    (tuned_weights,) = [f for f in tuned["files"] if f["path"] == realdata.WEIGHTS_FILE]
    for t in tuned_weights["tensors"]:
        assert (t["digest"] == by_name[t["name"]]["digest"]) != realdata.is_finetuned(t["name"])


def test_diff_names_exactly_the_finetuned_tensors(pushed: Pushed, reader: Client) -> None:
    d = reader.diff(BASE, TUNED)
    assert d["a"]["digest"] == pushed.base.manifest
    assert d["b"]["digest"] == pushed.tuned.manifest
    files = d["files"]
    assert files["added"] == []
    assert files["removed"] == []
    (changed,) = files["changed"]
    assert changed["path"] == realdata.WEIGHTS_FILE
    header = realdata.read_header(pushed.base_dir / realdata.WEIGHTS_FILE)
    expected = sorted(n for n in header.tensors if realdata.is_finetuned(n))
    assert expected
    assert [c["name"] for c in changed["tensors"]["changed"]] == expected
    assert all(c["changes"] == ["content"] for c in changed["tensors"]["changed"])
    assert changed["tensors"]["added"] == changed["tensors"]["removed"] == []
    assert changed["tensors"]["unchanged"] == len(header.tensors) - len(expected)
    on_disk = [p.relative_to(pushed.base_dir).as_posix() for p in files_under(pushed.base_dir)]
    assert files["unchanged"] == sorted(p for p in on_disk if p != realdata.WEIGHTS_FILE)
    # The dedupe the second push got, exactly.
    assert d["bytes_total"] == pushed.tuned.bytes_total
    assert d["bytes_new"] == pushed.tuned.bytes_new
    assert d["bytes_shared"] == pushed.tuned.bytes_total - pushed.tuned.bytes_new
    assert d["bytes_new"] >= realdata.changed_tensor_bytes(pushed.base_dir, pushed.tuned_dir)
    same = reader.diff(BASE, BASE)
    assert same["files"]["changed"] == []
    assert same["bytes_new"] == 0


def test_no_tensor_bytes_are_downloaded(
    pushed: Pushed, server: RunningServer, reader: Client, tmp_path: Path
) -> None:
    before = chunk_reads(server)
    reader.inspect(BASE)
    reader.diff(BASE, TUNED)
    assert chunk_reads(server) == before
    assert files_under(tmp_path / "cache") == []
    # The control: a pull of one small file is counted (the metric does see chunk reads).
    Client(server.url, cache_dir=tmp_path / "other").pull(BASE, include=["config.json"])
    assert chunk_reads(server) > before


def test_cli_json_and_tables(pushed: Pushed, client_env: dict[str, str], reader: Client) -> None:
    out = wreg("inspect", BASE, "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == reader.inspect(BASE)
    out = wreg("inspect", BASE, env=client_env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(rf"{re.escape(realdata.WEIGHTS_FILE)}\s+safetensors\s", text), text
    assert "encoder.layer.5.output.dense.weight" in text
    assert "F32" in text
    assert "path" in text
    assert "dtype" in text
    assert "params" in text
    out = wreg("inspect", BASE, "--no-tensors", env=client_env)
    assert out.returncode == 0
    assert "encoder.layer.5.output.dense.weight" not in out.stdout

    out = wreg("diff", BASE, TUNED, env=client_env)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{BASE} -> {TUNED}: files +0 -0 ~1"), first
    assert "shared" in out.stdout
    assert "new" in out.stdout
    assert "encoder.layer.4.attention.self.query.weight (content)" in out.stdout
    assert "encoder.layer.3.attention.self.query.weight" not in out.stdout
    out = wreg("diff", BASE, TUNED, "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == reader.diff(BASE, TUNED)

    one_line_error(wreg("inspect", f"{REPO}@nope", env=client_env), "nope")


def test_hostile_headers_are_per_file_errors(server: RunningServer, tmp_path: Path) -> None:
    model = tmp_path / "hostile"
    model.mkdir()
    (model / "huge.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    (model / "notjson.safetensors").write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 64)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 30]}})
    (model / "outside.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())
    (model / "bad.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0))
    client = Client(server.url, cache_dir=tmp_path / "cache")
    client.push(model, "inspect/hostile@v1")
    doc = client.inspect("inspect/hostile@v1")
    errors = {f["path"]: f.get("error") for f in doc["files"]}
    assert all(errors.values()), errors
    assert all("\n" not in e for e in errors.values() if e)
    assert "1099511627776" in (errors["huge.safetensors"] or "")
    assert "outside" in (errors["outside.safetensors"] or "")
    assert "gguf" in (errors["bad.gguf"] or "")
    assert all(f["tensors"] == [] for f in doc["files"])


def test_gguf_agrees_with_gguf_reader(server: RunningServer, tmp_path: Path) -> None:
    from gguf import GGUFReader

    base, tuned = realdata.gguf_model(), realdata.gguf_variant("finetune")
    client = Client(server.url, cache_dir=tmp_path / "cache")
    client.push(base, "inspect/gguf@base")
    client.push(tuned, "inspect/gguf@finetune")
    doc = client.inspect("inspect/gguf@base")
    (f,) = [f for f in doc["files"] if f["path"] == realdata.GGUF_FILE]
    assert f["format"] == "gguf"
    assert "error" not in f
    reader = GGUFReader(base / realdata.GGUF_FILE)
    by_name = {t["name"]: t for t in f["tensors"]}
    assert sorted(by_name) == sorted(t.name for t in reader.tensors)
    for t in reader.tensors:
        mine = by_name[t.name]
        assert mine["dtype"] == t.tensor_type.name
        assert mine["shape"] == [int(d) for d in t.shape]
        assert mine["nbytes"] == int(t.n_bytes)
        assert mine["parameters"] == int(t.n_elements)
        assert mine["offset"] == int(t.data_offset)
    for key in ("general.name", "general.architecture", "bert.block_count"):
        assert key in f["metadata"]
    assert f["metadata"]["general.name"] == realdata.GGUF_NAME
    assert f["metadata"]["tokenizer.ggml.tokens"]["length"] > 1000  # summarised, not listed
    d = client.diff("inspect/gguf@base", "inspect/gguf@finetune")
    (changed,) = d["files"]["changed"]
    assert [c["name"] for c in changed["tensors"]["changed"]] == realdata.gguf_changed_tensors()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("inspect-auth")
    running = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    yield running
    running.stop()


def test_inspect_needs_pull(auth_server: RunningServer, tmp_path: Path) -> None:
    pusher = create_token(auth_server, "pusher", "push:team-a/*")
    other = create_token(auth_server, "other", "pull:team-b/*")
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(realdata.base_model() / "config.json", model / "config.json")
    (model / "w.bin").write_bytes(os.urandom(1000))
    Client(auth_server.url, pusher, cache_dir=tmp_path / "c1").push(model, "team-a/m@v1")
    doc: dict[str, Any] = Client(auth_server.url, pusher, cache_dir=tmp_path / "c2").inspect(
        "team-a/m@v1"
    )
    assert doc["pushed_by"] == "pusher"
    with pytest.raises(AuthError) as denied:
        Client(auth_server.url, other, cache_dir=tmp_path / "c3").inspect("team-a/m@v1")
    assert denied.value.code.name == "DENIED"
    with pytest.raises(AuthError):
        Client(auth_server.url, "", cache_dir=tmp_path / "c4").inspect("team-a/m@v1")
    with pytest.raises(NotFound):
        Client(auth_server.url, pusher, cache_dir=tmp_path / "c5").inspect("team-a/m@nope")


def test_description_cache_is_bounded_by_bytes() -> None:
    from wreg_server.domain.inspect import DescribeCache, FileFacts

    def entry(n: int) -> FileFacts:
        tensors = tuple(a_tensor(f"t{i}") for i in range(n))
        return FileFacts("safetensors", {}, 0, tensors, None)

    cache = DescribeCache(max_bytes=10_000)
    for i in range(20):
        cache.put(f"blake3:{i}", entry(10))  # ~2 KB each
    assert 0 < len(cache) < 20
    assert cache.get("blake3:0") is None  # the oldest went first
    assert cache.get("blake3:19") is not None
    cache.put("blake3:huge", entry(1000))  # larger than the whole cache: not kept
    assert cache.get("blake3:huge") is None


def a_tensor(name: str) -> Any:
    from wreg.core.tensors import TensorEntry

    return TensorEntry(name, "F32", (4,), 0, 16, 4, None)
