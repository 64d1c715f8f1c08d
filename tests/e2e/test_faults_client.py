"""Fault injection on the client side, with real ``wreg`` processes and a real server on
127.0.0.1 (issue 5, item 3): ``kill -9`` mid-pull with ``-o``, a corrupted node-cache
file, a full disk, and truncated / reset / stalled / altered HTTP responses.

Covered elsewhere, not repeated here: resume of a pull killed into the node cache
(``test_node_cache.py::test_resume_after_kill_downloads_only_the_rest``), ``cache verify
--repair`` (``test_node_cache.py::test_verify_finds_corruption_and_repair_fixes_it``),
a chunk corrupted in the server's file store (``test_cli.py::
test_corrupt_chunk_on_server_is_refused_and_nothing_is_written``; the S3 case is in
``test_faults_server.py``).

Invariants checked after every fault: no file of the model exists under its final name
in ``-o`` unless it is whole and right; every file in ``blobs/`` hashes to its name;
every partial file under ``tmp/`` has its progress record (resumable) and nothing else
is left there; errors are one line on stderr, without a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.commands import one_line_error, spawn_wreg, wreg
from tests.e2e.faults import fault_proxy, small_disk
from tests.e2e.proxy import proxy
from wreg import Client
from wreg._cache import content_matches
from wreg._http import ATTEMPTS
from wreg.core.manifest import FileEntry, Manifest
from wreg.testing.servers import RunningServer

MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 6 MiB incompressible files (about 6 chunks each) and a small config."""
    root = tmp_path_factory.mktemp("faults") / "model"
    root.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (root / name).write_bytes(os.urandom(6 * MiB))
    (root / "config.json").write_text('{"layers": 3}')
    return root


@pytest.fixture(scope="module")
def manifest(
    server: RunningServer, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Manifest:
    cache = tmp_path_factory.mktemp("pusher")
    client = Client(server.url, cache_dir=cache)
    pushed = client.push(model, "faults/model@v1")
    client.pull("faults/model@v1")
    return Manifest.from_json_bytes(
        (cache / "manifests" / f"{pushed.manifest[7:]}.json").read_bytes()
    )


def chunks_of(manifest: Manifest, path: str | None = None) -> set[str]:
    return {c.digest for f in manifest.files if path in (None, f.path) for c in f.chunks}


def assert_same(model: Path, out: Path) -> None:
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in model.iterdir()), names
    for p in model.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name


def is_right(path: Path, entry: FileEntry) -> bool:
    """Whether ``path`` holds ``entry``'s bytes (chunk by chunk for a schema-2 identity)."""
    chunks = entry.chunks if entry.built_from_chunks else None
    return content_matches(path, entry.digest[7:], chunks)


def assert_cache_consistent(cache: Path, manifest: Manifest) -> None:
    """Blobs are whole and right; partial files are resumable; nothing else in tmp/."""
    known = {f.digest[7:]: f for f in manifest.files}
    for blob in (cache / "blobs").iterdir():
        assert is_right(blob, known[blob.name]), f"corrupt blob {blob.name}"
    for p in (cache / "tmp").iterdir():
        stem, _, suffix = p.name.partition(".")
        assert stem in known, p.name
        assert suffix in ("part", "progress"), p.name
        if suffix == "part":
            assert p.with_suffix(".progress").exists(), f"{p.name} without a progress record"


def assert_nothing_wrong_in(out: Path, manifest: Manifest) -> None:
    """No file under a final name unless whole and right; no staging leftovers."""
    if not out.exists():
        return
    for f in manifest.files:
        final = out / f.path
        if final.exists():
            assert is_right(final, f), f"wrong bytes under {final}"
    leftovers = [p.name for p in out.iterdir() if ".wreg-" in p.name]
    assert leftovers == [], leftovers


def test_kill9_mid_pull_into_dir_then_rerun_fetches_only_the_rest(
    server: RunningServer, model: Path, manifest: Manifest, tmp_path: Path
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    with proxy(server.url) as p:
        p.serve_limit = 9  # all of a.bin (6 chunks) and half of b.bin, then the server stalls
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache), "WREG_CONCURRENCY": "2"}
        victim = spawn_wreg(
            "pull", "faults/model@v1", "-o", str(out), "--json", env=env, capture=False
        )
        deadline = time.monotonic() + 60
        while p.served < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # let it append its progress record (every 0.5 s)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        first = dict(p.gets)
        assert sum(first.values()) == 9
        # Killed before the end: nothing under a final name in -o, blobs all whole.
        assert not any((out / f.path).exists() for f in manifest.files)
        assert_nothing_wrong_in(out, manifest)
        assert_cache_consistent(cache, manifest)
        assert list((cache / "tmp").glob("*.progress")), "no progress record was kept"

        p.unblock()
        rerun = wreg("pull", "faults/model@v1", "-o", str(out), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert_same(model, out)
    assert all(n == 1 for n in p.gets.values()), p.gets  # nothing crossed the wire twice
    assert set(p.gets) == chunks_of(manifest)
    assert result["chunks_downloaded"] == len(chunks_of(manifest)) - len(first)
    assert result["bytes_resumed"] + result["bytes_from_cache"] >= 9 * MiB // 2
    assert list((cache / "tmp").iterdir()) == []


def test_corrupt_cached_file_found_by_verify_and_repaired_by_next_pull(
    server: RunningServer, model: Path, manifest: Manifest, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}
    assert wreg("pull", "faults/model@v1", env=env).returncode == 0
    b = next(f for f in manifest.files if f.path == "b.bin")
    blob = cache / "blobs" / b.digest[7:]
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # same size: only re-hashing can tell
        f.seek(3 * MiB)
        f.write(b"\x00\x01\x02")
    found = wreg("cache", "verify", "--json", env=env)
    assert found.returncode == 1
    assert json.loads(found.stdout)["corrupt"] == [b.digest]
    # The next pull (no --repair) gets the file right again, downloading only its chunks.
    out = tmp_path / "out"
    with proxy(server.url) as p:
        pulled = wreg(
            "pull", "faults/model@v1", "-o", str(out), "--json", env=env | {"WREG_URL": p.url}
        )
    assert pulled.returncode == 0, pulled.stderr
    assert set(p.gets) == chunks_of(manifest, "b.bin")
    assert_same(model, out)
    assert wreg("cache", "verify", env=env).returncode == 0


def test_disk_full_cache_gives_one_line_error_and_stays_consistent(
    server: RunningServer, model: Path, manifest: Manifest, tmp_path: Path
) -> None:
    with small_disk(16 * MiB) as disk:
        cache = disk.path / "cache"
        env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}
        # --max-total past the disk: the free-space check would refuse up front
        # (tests/e2e/test_pull_limits.py); this test is about the disk filling mid-pull.
        pull = ("pull", "faults/model@v1", "--json", "--max-total", "1G")
        out = wreg(*pull, env=env, preexec=disk.preexec())
        line = one_line_error(out)
        assert ("No space left on device" in line) or (disk.how == "rlimit"), line
        assert_cache_consistent(cache, manifest)
        assert not list((cache / "snapshots").rglob("*.bin"))
        verify = wreg("cache", "verify", "--json", env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert json.loads(verify.stdout)["corrupt"] == []
        if disk.how == "loop":
            return  # a loop file system cannot grow here; the rest needs room
        disk.grow(64 * MiB)
        dest = tmp_path / "out"
        out = wreg("pull", "faults/model@v1", "-o", str(dest), env=env, preexec=disk.preexec())
        assert out.returncode == 0, out.stderr
        assert_same(model, dest)
        assert list((cache / "tmp").iterdir()) == []


def test_disk_full_output_dir_leaves_no_partial_file(
    server: RunningServer, model: Path, manifest: Manifest, tmp_path: Path
) -> None:
    """``-o`` on another (full) file system: blobs are copied, and the copy fails."""
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    with small_disk(10 * MiB) as disk:
        dest = disk.path / "out"
        out = wreg("pull", "faults/model@v1", "-o", str(dest), env=env, preexec=disk.preexec())
        one_line_error(out)
        assert_nothing_wrong_in(dest, manifest)
        assert sum(p.stat().st_size for p in dest.rglob("*")) <= 10 * MiB
    assert wreg("cache", "verify", env=env).returncode == 0


def test_transient_truncation_reset_and_stall_are_retried(
    server: RunningServer, model: Path, manifest: Manifest, tmp_path: Path
) -> None:
    digests = sorted(chunks_of(manifest))
    with fault_proxy(server.url) as p:
        p.stall_seconds = 3.0
        p.manifest_resets = 1
        plan = {
            digests[0]: ["truncate"],
            digests[1]: ["reset"],
            digests[2]: ["stall"],
            digests[3]: ["truncate", "reset"],
        }
        p.transient = {d: list(faults) for d, faults in plan.items()}
        env = os.environ | {
            "WREG_URL": p.url,
            "WREG_CACHE": str(tmp_path / "cache"),
            "WREG_TIMEOUT": "1",  # the stall outlasts it
        }
        out = wreg("pull", "faults/model@v1", "-o", str(tmp_path / "out"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert_same(model, tmp_path / "out")
    assert p.faulted == {"truncate": 2, "reset": 2 + 1, "stall": 1}, p.faulted
    for digest, faults in plan.items():
        assert p.gets[digest] == len(faults) + 1, (digest, p.gets[digest])
    assert json.loads(out.stdout)["chunks_downloaded"] == len(digests)


@pytest.mark.parametrize("fault", ["truncate", "reset"])
def test_permanent_transport_fault_fails_clearly_after_retries(
    server: RunningServer, manifest: Manifest, tmp_path: Path, fault: str
) -> None:
    victim = sorted(chunks_of(manifest, "c.bin"))[0]
    cache, dest = tmp_path / "cache", tmp_path / "out"
    with fault_proxy(server.url) as p:
        p.permanent = {victim: fault}
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache)}
        out = wreg("pull", "faults/model@v1", "-o", str(dest), env=env)
    one_line_error(out, f"registry at {p.url} broke during the download of chunk {victim}")
    # Retried, then given up. aiohttp itself retries a GET once when a reused keep-alive
    # connection is reset before any response, so a reset may cost two GETs an attempt.
    assert ATTEMPTS <= p.gets[victim] <= 2 * ATTEMPTS, p.gets[victim]
    assert not dest.exists() or not any((dest / f.path).exists() for f in manifest.files)
    c = next(f for f in manifest.files if f.path == "c.bin")
    assert not (cache / "blobs" / c.digest[7:]).exists()
    assert_cache_consistent(cache, manifest)


def test_partial_file_holds_only_verified_chunks(
    server: RunningServer, manifest: Manifest, tmp_path: Path
) -> None:
    """A file is not preallocated to the size a manifest declares: after a pull that got
    one chunk of c.bin (its smallest) and then lost the registry, its partial file takes
    that chunk's room on disk, not the file's."""
    c = next(f for f in manifest.files if f.path == "c.bin")
    kept = min(c.chunks, key=lambda chunk: chunk.size)
    rest = [chunk.digest for chunk in c.chunks if chunk != kept]
    assert c.size > 2 * kept.size
    cache = tmp_path / "cache"
    with fault_proxy(server.url) as p:
        p.permanent = dict.fromkeys(rest, "reset")
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache)}
        out = wreg("pull", "faults/model@v1", "--include", "c.bin", env=env)
    one_line_error(out, f"registry at {p.url} broke during the download of chunk")
    parts = list((cache / "tmp").glob("*.part"))
    assert [part.name for part in parts] == [f"{c.digest[7:]}.part"]
    allocated = parts[0].stat().st_blocks * 512
    assert 0 < allocated <= kept.size + 64 * KiB, (allocated, kept.size, c.size)


def test_altered_body_is_refused_without_retry_and_never_written(
    server: RunningServer, manifest: Manifest, tmp_path: Path
) -> None:
    """A body that arrives whole but wrong (a flipped byte in transit) fails its digest."""
    victim = sorted(chunks_of(manifest, "a.bin"))[0]
    cache, dest = tmp_path / "cache", tmp_path / "out"
    with fault_proxy(server.url) as p:
        p.permanent = {victim: "flip"}
        env = os.environ | {"WREG_URL": p.url, "WREG_CACHE": str(cache)}
        out = wreg("pull", "faults/model@v1", "-o", str(dest), env=env)
    one_line_error(out, "does not match its digest")
    assert p.gets[victim] == 1
    a = next(f for f in manifest.files if f.path == "a.bin")
    assert not (cache / "blobs" / a.digest[7:]).exists()
    assert_nothing_wrong_in(dest, manifest)
    assert_cache_consistent(cache, manifest)
