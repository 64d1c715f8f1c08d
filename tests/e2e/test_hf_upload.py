"""The write side: ``upload_folder`` / ``upload_file`` / ``create_repo`` from the real
``huggingface_hub`` into a real wreg-server, round-tripped by both HF and wreg clients."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import wreg
from tests.e2e.test_auth_cli import create_token
from tests.e2e.test_hf_api import assert_same_tree, hf_call
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hf-upload")
    running = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    yield running
    running.stop()


@pytest.mark.parametrize("xet_installed_path", [True, False], ids=["default", "xet-disabled"])
def test_upload_folder_round_trips(
    auth_server: RunningServer, tmp_path: Path, xet_installed_path: bool
) -> None:
    repo = "Trainer/MiniLM-" + ("a" if xet_installed_path else "b")
    token = create_token(auth_server, f"trainer-{repo[-1]}", "push:trainer/*")
    env = {} if xet_installed_path else {"HF_HUB_DISABLE_XET": "1"}
    out = hf_call(
        auth_server.url,
        f"""
        api = hh.HfApi()
        url = api.create_repo({repo!r}, exist_ok=True)
        again = api.create_repo({repo!r}, exist_ok=True)
        info = api.upload_folder(repo_id={repo!r}, folder_path={str(base_model())!r},
                                 commit_message="first")
        out = {{"url": str(url), "repo_id": again.repo_id, "oid": info.oid,
               "path": hh.snapshot_download({repo!r})}}
        """,
        tmp_path,
        token=token,
        **env,
    )
    assert "error" not in out, out
    assert out["repo_id"] == repo
    assert Path(out["path"]).name == out["oid"]
    assert_same_tree(base_model(), Path(out["path"]))
    # The wreg client sees the same model, chunked exactly as `wreg push` would have.
    client = wreg.Client(auth_server.url, token=token, cache_dir=tmp_path / "wc")
    client.pull(repo.lower(), tmp_path / "pulled")
    assert_same_tree(base_model(), tmp_path / "pulled")
    assert client.push(base_model(), repo.lower() + "@again").chunks_new == 0


def test_upload_file_builds_on_the_parent(auth_server: RunningServer, tmp_path: Path) -> None:
    repo = "trainer/incremental"
    token = create_token(auth_server, "trainer-inc", "push:trainer/*")
    reader = create_token(auth_server, "reader-inc", "pull:trainer/*")
    extra = tmp_path / "notes.txt"
    extra.write_text("fine-tuned for 3 epochs\n")
    out = hf_call(
        auth_server.url,
        f"""
        api = hh.HfApi()
        api.upload_folder(repo_id={repo!r}, folder_path={str(base_model())!r})
        first = api.model_info({repo!r}).sha
        api.upload_file(path_or_fileobj={str(extra)!r}, path_in_repo="docs/notes.txt",
                        repo_id={repo!r})
        api.delete_file("vocab.txt", repo_id={repo!r})
        out = {{"first": first, "path": hh.snapshot_download({repo!r}),
               "old": hh.snapshot_download({repo!r}, revision=first)}}
        """,
        tmp_path,
        token=token,
    )
    assert "error" not in out, out
    expected = tmp_path / "expected"
    shutil.copytree(base_model(), expected)
    (expected / "docs").mkdir()
    shutil.copy(extra, expected / "docs" / "notes.txt")
    (expected / "vocab.txt").unlink()
    assert_same_tree(expected, Path(out["path"]))
    assert_same_tree(base_model(), Path(out["old"]))
    # A pull-only token cannot write: the client's own error, nothing committed.
    denied = hf_call(
        auth_server.url,
        f"""
        hh.HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id={repo!r})
        """,
        tmp_path / "denied",
        token=reader,
    )
    assert denied["error"] in {"HfHubHTTPError", "RepositoryNotFoundError"}, denied


@pytest.fixture(scope="module")
def lfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hf-lfs")
    env = {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0", "WREG_HF_LFS_MIN_BYTES": "1048576"}
    running = start_server(root / "data", env)
    yield running
    running.stop()


def test_large_files_stream_over_lfs(lfs_server: RunningServer, tmp_path: Path) -> None:
    """With WREG_HF_LFS_MIN_BYTES, a client with Xet disabled PUTs large files to signed
    URLs (no token on the PUT) and names them by sha256 in the commit."""
    token = create_token(lfs_server, "lfs-trainer", "push:trainer/*")
    before = lfs_server.log.read_text().count(" PUT /api/lfs/")
    out = hf_call(
        lfs_server.url,
        f"""
        api = hh.HfApi()
        api.upload_folder(repo_id="trainer/lfs", folder_path={str(base_model())!r})
        api.upload_folder(repo_id="trainer/lfs", folder_path={str(base_model())!r},
                          path_in_repo="copy")
        out = {{"path": hh.snapshot_download("trainer/lfs")}}
        """,
        tmp_path,
        token=token,
        HF_HUB_DISABLE_XET="1",
    )
    assert "error" not in out, out
    log = lfs_server.log.read_text()
    puts = [line.split(" PUT ")[1] for line in log.splitlines() if " PUT /api/lfs/" in line]
    puts = puts[before:]
    # One PUT: the weights, once; the copy names the object the repository already holds.
    assert len(puts) == 1
    assert (
        puts[0]
        .split()[0]
        .endswith(hashlib.sha256((base_model() / "model.safetensors").read_bytes()).hexdigest())
    )
    expected = tmp_path / "expected"
    shutil.copytree(base_model(), expected)
    shutil.copytree(base_model(), expected / "copy")
    assert_same_tree(expected, Path(out["path"]))
    # The upload URL is the credential: a forged, altered or unsigned one is refused.
    oid = "0" * 64
    base = f"{lfs_server.url}/api/lfs/trainer/lfs/{oid}"
    for query in ("", "?size=1&expires=99999999999&sig=" + "0" * 64):
        r = httpx.put(base + query, content=b"x")
        assert r.status_code == 401, r.text
