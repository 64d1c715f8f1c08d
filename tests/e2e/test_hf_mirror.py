"""The pull-through mirror: wreg (A) fetches from an upstream hub once, then serves offline.

The upstream is another real wreg-server (B) serving its HF API, behind a counting proxy,
so the test sees every request that reaches upstream, and can take upstream away.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import wreg
from tests.e2e.proxy import Proxy, proxy
from tests.e2e.test_hf_api import assert_same_tree, hf_call
from wreg.core import hf
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("upstream")
    running = start_server(root / "data")
    client = wreg.Client(running.url, cache_dir=root / "cache")
    client.push(base_model(), "hub-org/minilm")
    client.push(variant("finetune"), "hub-org/minilm-ft")
    client.push(variant("bf16"), "blocked/minilm")
    yield running
    running.stop()


@pytest.fixture
def front(upstream: RunningServer) -> Iterator[Proxy]:
    with proxy(upstream.url) as p:
        yield p


@pytest.fixture
def mirror(front: Proxy, tmp_path: Path) -> Iterator[RunningServer]:
    env = {
        "WREG_UPSTREAM_HF": front.url,
        "WREG_UPSTREAM_HF_ALLOW": "hub-org/*,blocked/*",
        "WREG_UPSTREAM_HF_DENY": "blocked/*",
    }
    running = start_server(tmp_path / "mirror-data", env)
    yield running
    running.stop()


def upstream_gets(p: Proxy) -> list[str]:
    return [path for method, path in p.requests if method == "GET" and "/resolve/" in path]


def test_fetches_once_then_serves_offline(
    mirror: RunningServer, front: Proxy, tmp_path: Path
) -> None:
    code = "out = {'path': hh.snapshot_download('Hub-Org/MiniLM')}"
    first = hf_call(mirror.url, code, tmp_path / "a")
    assert "error" not in first, first
    assert_same_tree(base_model(), Path(first["path"]))
    files = [p for p in base_model().rglob("*") if p.is_file()]
    gets = upstream_gets(front)
    assert len(gets) == len(set(gets)) == len(files), "each file is fetched exactly once"
    # Recorded as a manifest with its upstream commit id, tagged latest and by that commit.
    info = httpx.get(f"{front.url}/api/models/hub-org/minilm").json()
    pulled = httpx.get(f"{mirror.url}/v1/repositories/hub-org/minilm/manifests/latest").json()
    assert pulled["metadata"]["hf"]["commit"] == info["sha"]
    assert pulled["metadata"]["hf"]["repo_id"] == "Hub-Org/MiniLM"
    # Upstream gone: a fresh client, by name and by the upstream commit, is still served.
    front.close()
    code = f"""
    out = {{"main": hh.snapshot_download("hub-org/minilm"),
           "pinned": hh.snapshot_download("hub-org/minilm", revision={info["sha"]!r})}}
    """
    offline = hf_call(mirror.url, code, tmp_path / "b")
    assert "error" not in offline, offline
    assert_same_tree(base_model(), Path(offline["main"]))
    assert_same_tree(base_model(), Path(offline["pinned"]))
    # The chunks are the ones `wreg push` makes: a push of the same model sends nothing.
    pushed = wreg.Client(mirror.url, cache_dir=tmp_path / "pc").push(base_model(), "mine/minilm")
    assert pushed.chunks_new == 0


def test_concurrent_requests_fetch_once(
    mirror: RunningServer, front: Proxy, tmp_path: Path
) -> None:
    results: list[dict[str, Any]] = []

    def one(i: int) -> None:
        code = "out = {'path': hh.snapshot_download('hub-org/minilm-ft')}"
        results.append(hf_call(mirror.url, code, tmp_path / f"c{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 3
    for out in results:
        assert "error" not in out, out
        assert_same_tree(variant("finetune"), Path(out["path"]))
    gets = upstream_gets(front)
    assert (
        len(gets)
        == len(set(gets))
        == len([p for p in variant("finetune").rglob("*") if p.is_file()])
    )
    # The sha256 ETags were computed on arrival and match the bytes.
    weights = variant("finetune") / "model.safetensors"
    head = httpx.head(f"{mirror.url}/hub-org/minilm-ft/resolve/main/model.safetensors")
    assert head.headers["etag"] == f'"{hashlib.sha256(weights.read_bytes()).hexdigest()}"'


def test_denied_and_unknown_repositories_are_not_found(
    mirror: RunningServer, front: Proxy, tmp_path: Path
) -> None:
    code = """
    out = {}
    for repo in ("blocked/minilm", "hub-org/absent", "elsewhere/minilm"):
        try:
            hh.snapshot_download(repo)
            out[repo] = None
        except Exception as exc:
            out[repo] = type(exc).__name__
    """
    out = hf_call(mirror.url, code, tmp_path)
    assert out == dict.fromkeys(
        ["blocked/minilm", "hub-org/absent", "elsewhere/minilm"], "RepositoryNotFoundError"
    )
    asked = {path for _, path in front.requests}
    assert not any("blocked" in p or "elsewhere" in p for p in asked)  # never asked upstream
    assert any("hub-org/absent" in p for p in asked)
    assert hf.name_of("Hub-Org/MiniLM") == "hub-org/minilm"
