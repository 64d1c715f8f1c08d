"""The real ``huggingface_hub`` against a real wreg-server on 127.0.0.1 (``HF_ENDPOINT``).

Each call runs in a subprocess: huggingface_hub reads ``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HUB_CACHE`` once, at import, as every user's process does.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import wreg
from tests.e2e.proxy import Proxy, proxy
from wreg.core import hf
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer, start_server

REPO_ID = "Team-HF/MiniLM-L6"
NAME = "team-hf/minilm-l6"


def hf_call(
    endpoint: str, code: str, tmp: Path, token: str | None = None, **env: str
) -> dict[str, Any]:
    """Run ``code`` (which sets ``out``) with huggingface_hub against ``endpoint``; its
    ``out`` as JSON, or ``{"error": type name, "message": …}`` when it raised."""
    script = textwrap.dedent(
        """
        import json, sys
        import huggingface_hub as hh
        from huggingface_hub import errors
        try:
            out = None
        {body}
        except Exception as exc:
            out = {{"error": type(exc).__name__, "message": str(exc)[:500]}}
        print(json.dumps(out))
        """
    ).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment |= {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **env,
    }
    if token is not None:
        environment["HF_TOKEN"] = token
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real model pushed as ``team-hf/minilm-l6`` (``latest`` and ``v1``), a variant
    as ``v2``; returns paths and digests."""
    cache = tmp_path_factory.mktemp("push-cache")
    client = wreg.Client(server.url, cache_dir=cache)
    base = base_model()
    v1 = client.push(base, f"{NAME}@v1")
    client.push(base, NAME)
    v2 = client.push(variant("finetune"), f"{NAME}@v2")
    return {"base": base, "v1": v1.manifest, "v2": v2.manifest, "v2_path": variant("finetune")}


@pytest.fixture
def counted(server: RunningServer) -> Iterator[Proxy]:
    with proxy(server.url) as p:
        yield p


def test_snapshot_download_by_tag_and_commit(
    server: RunningServer, pushed: dict[str, Any], tmp_path: Path
) -> None:
    out = hf_call(
        server.url,
        f"""
        path = hh.snapshot_download({REPO_ID!r})
        pinned = hh.snapshot_download({REPO_ID!r}, revision={hf.commit_id(pushed["v2"])!r})
        out = {{"main": path, "pinned": pinned}}
        """,
        tmp_path,
    )
    assert "error" not in out, out
    main = Path(out["main"])
    assert main.name == hf.commit_id(pushed["v1"])
    assert_same_tree(pushed["base"], main)
    pinned = Path(out["pinned"])
    assert pinned.name == hf.commit_id(pushed["v2"])
    assert_same_tree(pushed["v2_path"], pinned)


def assert_same_tree(expected: Path, actual: Path) -> None:
    want = sorted(p.relative_to(expected).as_posix() for p in expected.rglob("*") if p.is_file())
    got = sorted(p.relative_to(actual).as_posix() for p in actual.rglob("*") if p.is_file())
    assert got == want
    for rel in want:
        assert filecmp.cmp(expected / rel, actual / rel, shallow=False), rel


def test_model_info_and_listing(
    server: RunningServer, pushed: dict[str, Any], tmp_path: Path
) -> None:
    out = hf_call(
        server.url,
        f"""
        api = hh.HfApi()
        info = api.model_info({REPO_ID!r})
        v2 = api.model_info({REPO_ID!r}, revision="v2", files_metadata=True)
        out = {{
            "sha": info.sha, "id": info.id,
            "siblings": sorted(s.rfilename for s in info.siblings),
            "v2_sha": v2.sha,
            "v2_sizes": {{s.rfilename: s.size for s in v2.siblings}},
            "v2_lfs": {{s.rfilename: s.lfs.sha256 for s in v2.siblings if s.lfs}},
            "files": api.list_repo_files({REPO_ID!r}),
            "exists": api.file_exists({REPO_ID!r}, "config.json"),
            "missing": api.file_exists({REPO_ID!r}, "nope.bin"),
        }}
        """,
        tmp_path,
    )
    assert "error" not in out, out
    files = sorted(
        p.relative_to(pushed["base"]).as_posix() for p in pushed["base"].rglob("*") if p.is_file()
    )
    assert out["sha"] == hf.commit_id(pushed["v1"])
    assert out["v2_sha"] == hf.commit_id(pushed["v2"])
    assert out["siblings"] == files
    assert sorted(out["files"]) == files
    assert out["exists"] is True
    assert out["missing"] is False
    import hashlib

    for rel, sha in out["v2_lfs"].items():
        assert sha == hashlib.sha256((pushed["v2_path"] / rel).read_bytes()).hexdigest()
    assert out["v2_sizes"] == {rel: (pushed["v2_path"] / rel).stat().st_size for rel in files}


def resolve_gets(p: Proxy) -> list[str]:
    return [path for method, path in p.requests if method == "GET" and "/resolve/" in path]


def test_second_snapshot_download_makes_no_data_requests(
    counted: Proxy, pushed: dict[str, Any], tmp_path: Path
) -> None:
    code = f"out = {{'path': hh.snapshot_download({REPO_ID!r})}}"
    first = hf_call(counted.url, code, tmp_path)
    assert "error" not in first, first
    assert len(resolve_gets(counted)) == len(list(pushed["base"].rglob("*.*")))
    counted.requests.clear()
    second = hf_call(counted.url, code, tmp_path)
    assert second == first
    assert resolve_gets(counted) == []
    assert counted.requests, "the revision is still resolved online"


def test_hf_hub_download_and_local_dir(
    counted: Proxy, pushed: dict[str, Any], tmp_path: Path
) -> None:
    weights = pushed["base"] / "model.safetensors"
    local = tmp_path / "local"
    code = f"""
    cached = hh.hf_hub_download({REPO_ID!r}, "model.safetensors")
    placed = hh.hf_hub_download({REPO_ID!r}, "model.safetensors", local_dir={str(local)!r})
    out = {{"cached": cached, "placed": placed}}
    """
    out = hf_call(counted.url, code, tmp_path)
    assert "error" not in out, out
    assert Path(out["placed"]) == local / "model.safetensors"
    for path in (out["cached"], out["placed"]):
        assert Path(path).read_bytes() == weights.read_bytes()
    # The cache's blob is named by the ETag: the file's sha256.
    import hashlib

    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert Path(out["cached"]).resolve().name == sha256
    # Again into local_dir: its metadata matches the ETag, nothing is downloaded.
    counted.requests.clear()
    again = hf_call(counted.url, code, tmp_path / "second-cache")
    assert again["placed"] == out["placed"]
    gets = resolve_gets(counted)
    assert all("local" not in g for g in gets)
    assert len(gets) == 1
    # A local_dir holding the right bytes but no metadata: the sha256 ETag check passes.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "model.safetensors").write_bytes(weights.read_bytes())
    counted.requests.clear()
    code = f"""
    where = hh.hf_hub_download({REPO_ID!r}, "model.safetensors", local_dir={str(fresh)!r})
    out = {{"placed": where}}
    """
    hf_call(counted.url, code, tmp_path)
    assert resolve_gets(counted) == []
    assert (fresh / ".cache" / "huggingface").is_dir()


def test_ranged_reads(server: RunningServer, pushed: dict[str, Any], tmp_path: Path) -> None:
    data = (pushed["base"] / "model.safetensors").read_bytes()
    out = hf_call(
        server.url,
        f"""
        fs = hh.HfFileSystem()
        with fs.open({REPO_ID + "/model.safetensors"!r}, "rb") as f:
            f.seek(5_000_000)
            part = f.read(3_000_000)
        out = {{"len": len(part), "hex": part[:64].hex(), "tail": part[-64:].hex()}}
        """,
        tmp_path,
    )
    assert "error" not in out, out
    want = data[5_000_000:8_000_000]
    assert out["len"] == len(want)
    assert bytes.fromhex(out["hex"]) == want[:64]
    assert bytes.fromhex(out["tail"]) == want[-64:]
    url = f"{server.url}/{REPO_ID}/resolve/main/model.safetensors"
    with httpx.Client() as http:
        r = http.get(url, headers={"Range": "bytes=100-4194399"})  # across a chunk boundary
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 100-4194399/{len(data)}"
        assert r.content == data[100:4194400]
        r = http.get(url, headers={"Range": "bytes=-10"})
        assert r.status_code == 206
        assert r.content == data[-10:]
        r = http.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{len(data)}"
        r = http.head(url)
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == len(data)
        assert r.headers["x-repo-commit"] == hf.commit_id(pushed["v1"])
        assert r.headers["accept-ranges"] == "bytes"


def test_not_found_errors_are_the_clients_own(
    server: RunningServer, pushed: dict[str, Any], tmp_path: Path
) -> None:
    out = hf_call(
        server.url,
        f"""
        out = {{}}
        for label, call in [
            ("file", lambda: hh.hf_hub_download({REPO_ID!r}, "nope.bin")),
            ("revision", lambda: hh.hf_hub_download({REPO_ID!r}, "config.json", revision="v9")),
            ("commit", lambda: hh.snapshot_download({REPO_ID!r}, revision="0" * 40)),
            ("repo", lambda: hh.snapshot_download("team-hf/absent")),
            ("info", lambda: hh.HfApi().model_info("team-hf/absent")),
        ]:
            try:
                call()
                out[label] = None
            except Exception as exc:
                out[label] = type(exc).__name__
        """,
        tmp_path,
    )
    assert out == {
        "file": "RemoteEntryNotFoundError",
        "revision": "RevisionNotFoundError",
        "commit": "RevisionNotFoundError",
        "repo": "RepositoryNotFoundError",
        "info": "RepositoryNotFoundError",
    }
    # The missing entry names its commit, so the client caches the absence.
    r = httpx.head(f"{server.url}/{REPO_ID}/resolve/main/nope.bin")
    assert r.status_code == 404
    assert r.headers["x-error-code"] == "EntryNotFound"
    assert r.headers["x-repo-commit"] == hf.commit_id(pushed["v1"])


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hf-auth")
    running = start_server(root / "data", {"WREG_AUTH": "on", "WREG_AUTH_CACHE_SECONDS": "0"})
    yield running
    running.stop()


def test_hf_token_and_scopes(auth_server: RunningServer, tmp_path: Path) -> None:
    from tests.e2e.test_auth_cli import create_token

    pusher = create_token(auth_server, "hf-pusher", "push:team-hf/*")
    reader = create_token(auth_server, "hf-reader", "pull:team-hf/*")
    other = create_token(auth_server, "hf-other", "pull:team-x/*", "push:team-x/*")
    wreg.Client(auth_server.url, token=pusher, cache_dir=tmp_path / "c").push(base_model(), NAME)
    code = f"""
    out = {{}}
    for label, call in [
        ("info", lambda: hh.HfApi().model_info({REPO_ID!r}).sha),
        ("file", lambda: hh.hf_hub_download({REPO_ID!r}, "config.json")),
    ]:
        try:
            out[label] = call()
        except Exception as exc:
            out[label] = type(exc).__name__
    """
    allowed = hf_call(auth_server.url, code, tmp_path, token=reader)
    assert isinstance(allowed["info"], str)
    assert len(allowed["info"]) == 40
    assert Path(allowed["file"]).read_bytes() == (base_model() / "config.json").read_bytes()
    # A token without pull on the repository, and no token at all: "not found", exactly
    # as for a repository that does not exist.
    for token in (other, None):
        denied = hf_call(auth_server.url, code, tmp_path / "denied", token=token)
        assert denied == {"info": "RepositoryNotFoundError", "file": "RepositoryNotFoundError"}
    absent = hf_call(
        auth_server.url,
        code.replace(REPO_ID, "team-x/absent"),
        tmp_path / "absent",
        token=other,
    )
    assert absent == denied
    with httpx.Client() as http:
        url = f"{auth_server.url}/api/models/{REPO_ID}"
        assert http.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
        assert http.get(url).status_code == 401
        r = http.get(url, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 200
        assert r.json()["private"] is True


def test_tree_listing_pages(server: RunningServer, tmp_path: Path) -> None:
    """More files than one page (1000): the client follows ``Link: rel="next"``."""
    model = tmp_path / "many"
    for i in range(1105):
        (model / f"shard-{i // 100:02d}").mkdir(parents=True, exist_ok=True)
        (model / f"shard-{i // 100:02d}" / f"f{i:04d}.txt").write_text(f"{i}\n")
    wreg.Client(server.url, cache_dir=tmp_path / "c").push(model, "team-hf/many")
    out = hf_call(
        server.url,
        """
        api = hh.HfApi()
        out = {"files": api.list_repo_files("team-hf/many"),
               "top": [e.path for e in api.list_repo_tree("team-hf/many")]}
        """,
        tmp_path,
    )
    assert "error" not in out, out
    want = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert sorted(out["files"]) == want
    assert out["top"] == [f"shard-{i:02d}" for i in range(12)]
    # The pages themselves: 1000 entries, then the rest (1105 files + 12 folders).
    with httpx.Client() as http:
        first = http.get(f"{server.url}/api/models/team-hf/many/tree/main?recursive=true")
        assert len(first.json()) == 1000
        second = http.get(first.links["next"]["url"])
        assert len(second.json()) == 117
        assert "next" not in second.links
        paths = [e["path"] for e in first.json() + second.json()]
        assert len(set(paths)) == len(paths) == 1117
