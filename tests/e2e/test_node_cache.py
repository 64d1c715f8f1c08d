"""The transfer engine and node cache against a real server, with real client processes:
resume after ``kill -9``, one download per node, prune, offline, warm, verify, stat
cache, partial pulls."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import commands
from tests.e2e.commands import spawn_wreg
from tests.e2e.proxy import proxy
from tests.e2e.test_roundtrip import assert_same_tree
from wreg import Client
from wreg.core.errors import ErrorCode, InvalidInput, NotFound
from wreg.core.manifest import Manifest
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer


def wreg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return commands.wreg(*args, env=env, timeout=180)


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """The real model pushed as nc/minilm@v1 (also @ft: the fine-tune, @bf16)."""
    cache = tmp_path_factory.mktemp("pusher")
    client = Client(server.url, cache_dir=cache)
    result = client.push(base_model(), "nc/minilm@v1")
    client.push(variant("finetune"), "nc/minilm@ft")
    client.push(variant("bf16"), "nc/minilm@bf16")
    client.pull("nc/minilm@v1")
    return Manifest.from_json_bytes(
        (cache / "manifests" / f"{result.manifest[7:]}.json").read_bytes()
    )


def _distinct(manifest: Manifest) -> set[str]:
    return {c.digest for f in manifest.files for c in f.chunks}


def test_resume_after_kill_downloads_only_the_rest(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with proxy(server.url) as p:
        p.serve_limit = 10
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache), "WREG_CONCURRENCY": "2"}
        victim = spawn_wreg("pull", "nc/minilm@v1", env=env)
        deadline = time.monotonic() + 60
        while p.served < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the stalled pull appends its progress record every 0.5 s
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        first = dict(p.gets)
        assert sum(first.values()) == 10
        assert list((cache / "tmp").glob("*.progress")), "no progress record was kept"

        p.unblock()
        resumed = Client(p.url, cache_dir=cache).pull("nc/minilm@v1", tmp_path / "out")
    assert_same_tree(base_model(), tmp_path / "out")
    assert resumed.bytes_resumed > 0
    # Every chunk crossed the wire exactly once over both runs.
    assert all(n == 1 for n in p.gets.values()), p.gets
    assert set(p.gets) == _distinct(pushed)
    assert resumed.chunks_downloaded == len(_distinct(pushed)) - len(first)
    assert list((cache / "tmp").iterdir()) == []


def test_two_concurrent_pulls_download_once(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with proxy(server.url) as p:
        p.delay = 0.02
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache)}
        procs = [
            spawn_wreg("pull", "nc/minilm@v1", "-o", str(tmp_path / f"out{i}"), "--json", env=env)
            for i in range(2)
        ]
        outs = [proc.communicate(timeout=180) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    results = [json.loads(out) for out, _err in outs]
    assert all(n == 1 for n in p.gets.values()), p.gets
    assert set(p.gets) == _distinct(pushed)
    assert sum(r["chunks_downloaded"] for r in results) == len(_distinct(pushed))
    for i in range(2):
        assert_same_tree(base_model(), tmp_path / f"out{i}")


def test_finetune_with_base_cached_downloads_only_changed_chunks(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    client.pull("nc/minilm@v1")
    with proxy(server.url) as p:
        tuned = Client(p.url, cache_dir=tmp_path / "cache").pull("nc/minilm@ft", tmp_path / "ft")
    assert_same_tree(variant("finetune"), tmp_path / "ft")
    new = _distinct(Manifest.from_json_bytes(_manifest_bytes(tmp_path, tuned)))
    assert set(p.gets) == new - _distinct(pushed)
    assert tuned.bytes_from_cache > 0.8 * tuned.bytes_total


def _manifest_bytes(tmp_path: Path, result: object) -> bytes:
    digest = getattr(result, "manifest", "")
    return (tmp_path / "cache" / "manifests" / f"{digest[7:]}.json").read_bytes()


def test_prune_respects_pins_and_snapshots_in_use(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    v1 = client.pull("nc/minilm@v1")
    ft = client.pull("nc/minilm@ft")
    bf = client.pull("nc/minilm@bf16")
    assert client.cache_pin("nc/minilm@v1") == v1.manifest
    with open(Path(ft.path) / "model.safetensors", "rb"):  # a job has @ft open
        result = client.cache_prune(0)
        assert result.removed == [f"nc/minilm@{bf.manifest}"]
        assert result.kept_pinned == [f"nc/minilm@{v1.manifest}"]
        assert result.kept_in_use == [f"nc/minilm@{ft.manifest}"]
        listing = client.cache_ls()
        assert {s.manifest for s in listing.snapshots} == {v1.manifest, ft.manifest}
        assert all(s.complete for s in listing.snapshots)
    # Offline, the pruned snapshot is gone and the pinned one still works.
    offline = Client("http://127.0.0.1:9", cache_dir=tmp_path / "cache", offline=True)
    assert offline.pull("nc/minilm@v1", tmp_path / "o").manifest == v1.manifest
    with pytest.raises(NotFound, match="not in the node cache") as pruned:
        offline.pull("nc/minilm@bf16")
    assert pruned.value.code is ErrorCode.NOT_CACHED

    client.cache_unpin("nc/minilm@v1")
    result = client.cache_prune(0)
    assert sorted(result.removed) == sorted(
        [f"nc/minilm@{v1.manifest}", f"nc/minilm@{ft.manifest}"]
    )
    assert result.bytes_after == 0
    assert list((tmp_path / "cache" / "blobs").iterdir()) == []
    # The -o copy made before pruning is a hardlink and survives.
    assert_same_tree(base_model(), tmp_path / "o")


def test_offline_mode(server: RunningServer, pushed: Manifest, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}
    out = wreg("pull", "nc/minilm@v1", "--include", "*.json", env=env)
    assert out.returncode == 0, out.stderr
    dead = env | {"WREG_URL": "http://127.0.0.1:9"}
    # Offline: a tag resolves from refs/, and the files pulled before are enough.
    out = wreg("pull", "nc/minilm@v1", "--offline", "--include", "*.json", "--json", env=dead)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["bytes_downloaded"] == 0
    # The whole model is not there: refused, with a clear one-line error.
    out = wreg("pull", "nc/minilm@v1", "-o", str(tmp_path / "o"), env=dead | {"WREG_OFFLINE": "1"})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "incomplete in the node cache" in out.stderr
    assert "files missing" in out.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()
    out = wreg("pull", "nc/minilm@nope", "--offline", env=dead)
    assert out.returncode == 1
    assert "not in the node cache" in out.stderr


def test_cache_warm_exit_codes_and_idempotence(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    refs = tmp_path / "refs.txt"
    refs.write_text("# models for this node\nnc/minilm@v1\n\nnc/minilm@ft  # tuned\n")
    out = wreg("cache", "warm", "--from", str(refs), env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("ok ") for line in lines)
    out = wreg("cache", "warm", "--from", str(refs), "--json", env=env)
    assert out.returncode == 0
    assert [r["bytes_downloaded"] for r in json.loads(out.stdout)["results"]] == [0, 0]
    out = wreg("cache", "warm", "nc/minilm@v1", "nc/missing@v1", env=env)
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ok ")
    assert lines[1].startswith("FAIL  nc/missing@v1")
    out = wreg("cache", "ls", "--json", env=env)
    listing = json.loads(out.stdout)
    assert {tuple(s["tags"]) for s in listing["snapshots"]} == {("v1",), ("ft",)}


def test_verify_finds_corruption_and_repair_fixes_it(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    assert wreg("pull", "nc/minilm@v1", env=env).returncode == 0
    out = wreg("cache", "verify", env=env)
    assert out.returncode == 0, out.stdout
    weights = next(f for f in pushed.files if f.path == "model.safetensors")
    blob = tmp_path / "cache" / "blobs" / weights.digest[7:]
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xfe")
    out = wreg("cache", "verify", "--json", env=env)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["corrupt"] == [weights.digest]
    assert report["ok"] is False
    out = wreg("cache", "verify", "--repair", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "repaired nc/minilm@" in out.stdout
    assert wreg("cache", "verify", env=env).returncode == 0
    out_dir = tmp_path / "out"
    assert wreg("pull", "nc/minilm@v1", "-o", str(out_dir), env=env).returncode == 0
    assert_same_tree(base_model(), out_dir)


def test_stat_cache_avoids_rereading_unchanged_files(server: RunningServer, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(base_model(), model)
    old = time.time() - 60
    for p in model.iterdir():
        os.utime(p, (old, old))
    client = Client(server.url, cache_dir=tmp_path / "cache")
    first = client.push(model, "nc/stat@v1")
    assert first.bytes_hashed == first.bytes_total
    again = client.push(model, "nc/stat@v1")
    assert (again.bytes_hashed, again.bytes_sent, again.manifest) == (0, 0, first.manifest)
    # A changed file is read again, and only that one.
    config = model / "config.json"
    config.write_text(config.read_text().replace("}", ', "edited": true}', 1))
    os.utime(config, (old + 1, old + 1))
    changed = client.push(model, "nc/stat@v2")
    assert changed.bytes_hashed == config.stat().st_size
    assert changed.manifest != first.manifest
    assert changed.chunks_new == 1


def test_include_and_exclude(server: RunningServer, pushed: Manifest, tmp_path: Path) -> None:
    client = Client(server.url, cache_dir=tmp_path / "cache")
    only = client.pull("nc/minilm@v1", tmp_path / "a", include=["*.safetensors"])
    assert only.files == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.safetensors"]
    rest = client.pull("nc/minilm@v1", tmp_path / "b", exclude=["*.safetensors", "*.txt"])
    names = {p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert Path("model.safetensors") not in names
    assert not any(n.suffix == ".txt" for n in names)
    assert rest.files == len(names)
    assert rest.bytes_downloaded > 0
    with pytest.raises(InvalidInput, match="no file of the model matches") as unmatched:
        client.pull("nc/minilm@v1", include=["*.gguf"])
    assert unmatched.value.code is ErrorCode.FILTER_INVALID
    # The whole model now needs only what both partial pulls left out (vocab.txt).
    whole = client.pull("nc/minilm@v1", tmp_path / "c")
    assert whole.bytes_from_cache == only.bytes_total + rest.bytes_total
    assert_same_tree(base_model(), tmp_path / "c")
