"""``wreg import-hf``: a Hugging Face snapshot on disk pushed as it is, through a real server.

The caches are built by hand as huggingface_hub lays them out (``refs/main``,
``snapshots/<commit>/<path>`` relative links into ``../../blobs/<sha256>``), from the
real model's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.commands import one_line_error, wreg
from tests.e2e.test_roundtrip import assert_same_tree
from wreg import Client
from wreg.core.errors import ErrorCode, InvalidInput, NotFound
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer

REPO_ID = "E2E-Org/MiniLM-HF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def base() -> Path:
    return base_model()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copyfile(src, dst)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def hf_cache(hub: Path, model: Path, repo_id: str = REPO_ID, commit: str = COMMIT) -> Path:
    """``hub/models--org--name`` holding ``model`` as huggingface_hub caches it."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for src in _files(model):
        blob = repo / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
        if not blob.exists():
            _link_or_copy(src, blob)
        link = snapshot / src.relative_to(model)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


def manifest_doc(server: RunningServer, reference: str, digest: str) -> dict[str, Any]:
    name = reference.partition("@")[0]
    r = httpx.get(f"{server.url}/v1/repositories/{name}/manifests/{digest}")
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def test_import_a_cache_repository_round_trip_and_again_sends_nothing(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    repo = hf_cache(tmp_path / "hub", base)
    client = Client(server.url, cache_dir=tmp_path / "cache")

    first = client.import_hf(repo)
    assert first.reference == "e2e-org/minilm-hf@latest"  # the HF id, lowercase
    assert first.files == len(_files(base))
    assert first.bytes_total == sum(p.stat().st_size for p in _files(base))
    assert first.skipped == []
    doc = manifest_doc(server, first.reference, first.manifest)
    assert doc["metadata"] == {"hf": {"repo_id": REPO_ID, "commit": COMMIT, "revision": "main"}}

    pulled = client.pull(first.reference, tmp_path / "out")
    assert pulled.manifest == first.manifest
    assert_same_tree(base, tmp_path / "out")

    # A normal push underneath: nothing new the second time, nor from another node.
    again = client.import_hf(repo)
    assert again.manifest == first.manifest
    assert (again.chunks_new, again.bytes_new, again.bytes_sent) == (0, 0, 0)
    assert again.bytes_hashed == 0  # the blobs' stats are remembered
    other = Client(server.url, cache_dir=tmp_path / "cache2").import_hf(repo)
    assert other.manifest == first.manifest
    assert (other.chunks_new, other.bytes_sent) == (0, 0)

    # The snapshot directory itself names the same import (its ref found in refs/).
    snap = client.import_hf(repo / "snapshots" / COMMIT)
    assert snap.manifest == first.manifest

    # A hub cache root needs --repo-id; then the CLI imports the same, with --json.
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    out = wreg("import-hf", str(tmp_path / "hub"), "--json", env=env)
    one_line_error(out, "--repo-id")
    out = wreg("import-hf", str(tmp_path / "hub"), "--repo-id", REPO_ID, "--json", env=env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert (shown["reference"], shown["manifest"]) == (first.reference, first.manifest)
    assert shown["chunks_new"] == 0


def test_revision_picks_another_ref_or_a_commit(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    repo = hf_cache(tmp_path / "hub", base, "e2e-org/rev-model")
    other = "fedcba9876543210fedcba9876543210fedcba98"
    (repo / "snapshots" / other).mkdir()
    (repo / "snapshots" / other / "config.json").symlink_to(
        os.path.relpath(next((repo / "blobs").iterdir()), repo / "snapshots" / other)
    )
    (repo / "refs" / "v2").write_text(other + "\n")
    client = Client(server.url, cache_dir=tmp_path / "cache")

    by_ref = client.import_hf(repo, "e2e-hf/rev@v2", revision="v2")
    assert by_ref.files == 1
    meta = manifest_doc(server, by_ref.reference, by_ref.manifest)["metadata"]
    assert meta == {"hf": {"repo_id": "e2e-org/rev-model", "commit": other, "revision": "v2"}}
    by_commit = client.import_hf(repo, "e2e-hf/rev@c", revision=other)
    meta = manifest_doc(server, by_commit.reference, by_commit.manifest)["metadata"]
    assert meta == {"hf": {"repo_id": "e2e-org/rev-model", "commit": other}}

    with pytest.raises(InvalidInput) as info:
        client.import_hf(repo, "e2e-hf/rev@x", revision="nope")
    assert info.value.code is ErrorCode.HF_SNAPSHOT_INVALID
    assert "nope" in str(info.value)


def test_a_local_dir_download_leaves_out_its_cache_folder(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    for src in _files(base):
        _link_or_copy(src, local / src.relative_to(base))
    meta = local / ".cache" / "huggingface"
    (meta / "download" / "1_Pooling").mkdir(parents=True)
    (meta / ".gitignore").write_text("*\n")
    (meta / "download" / "model.safetensors.metadata").write_text(f"{COMMIT}\netag\n1.0\n")
    (meta / "download" / "1_Pooling" / "config.json.metadata").write_text(f"{COMMIT}\ne\n1\n")
    (meta / "download" / "vocab.txt.incomplete").write_bytes(b"half")
    client = Client(server.url, cache_dir=tmp_path / "cache")

    # Nothing names the HF repository: a REF (or --repo-id) must.
    with pytest.raises(InvalidInput, match="give a REF"):
        client.import_hf(local)

    done = client.import_hf(local, repo_id="E2E-Org/MiniLM-Local")
    assert done.reference == "e2e-org/minilm-local@latest"
    assert done.files == len(_files(base))
    doc = manifest_doc(server, done.reference, done.manifest)
    assert not [f["path"] for f in doc["files"] if f["path"].startswith(".cache")]
    assert doc["metadata"] == {"hf": {"repo_id": "E2E-Org/MiniLM-Local", "commit": COMMIT}}

    pulled = client.pull(f"{done.reference.partition('@')[0]}@{done.manifest}")
    assert_same_tree(base, Path(pulled.path))


def test_a_link_out_of_the_repository_blobs_is_refused(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    repo = hf_cache(tmp_path / "hub", base, "e2e-org/escape")
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of the model")
    link = repo / "snapshots" / COMMIT / "extra.txt"
    link.symlink_to(os.path.relpath(outside, link.parent))
    client = Client(server.url, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInput) as info:
        client.import_hf(repo)
    assert info.value.code is ErrorCode.HF_SNAPSHOT_INVALID
    assert "extra.txt" in str(info.value)
    assert "outside" in str(info.value)

    # Another repository's blobs are outside too.
    sibling = hf_cache(tmp_path / "hub", base / "1_Pooling", "e2e-org/sibling")
    link.unlink()
    link.symlink_to(os.path.relpath(next((sibling / "blobs").iterdir()), link.parent))
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    one_line_error(wreg("import-hf", str(repo), env=env), "extra.txt", "outside")

    with pytest.raises(NotFound):  # nothing was pushed
        client.pull("e2e-org/escape@latest")


def test_an_incomplete_snapshot_is_refused(
    server: RunningServer, base: Path, tmp_path: Path
) -> None:
    repo = hf_cache(tmp_path / "hub", base, "e2e-org/partial")
    client = Client(server.url, cache_dir=tmp_path / "cache")
    link = repo / "snapshots" / COMMIT / "later.bin"
    link.symlink_to("../../blobs/" + "ab" * 32)  # its blob never arrived
    with pytest.raises(InvalidInput) as info:
        client.import_hf(repo)
    assert info.value.code is ErrorCode.HF_SNAPSHOT_INVALID
    assert "later.bin" in str(info.value)
    assert "incomplete" in str(info.value)

    link.unlink()
    (repo / "blobs" / ("cd" * 32 + ".incomplete")).write_bytes(b"downloading")
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    one_line_error(wreg("import-hf", str(repo), env=env), "unfinished", ".incomplete")

    with pytest.raises(NotFound):  # nothing was pushed
        client.pull("e2e-org/partial@latest")
