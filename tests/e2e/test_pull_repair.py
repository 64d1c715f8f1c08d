"""Repairs at commit go through the pull's one bounded fetch pool (issue 11, item 5).

What a pull killed after writing a whole file leaves behind — ``tmp/<hex>.part`` and a
progress record listing every chunk — with one recorded chunk damaged on disk (the crash
lost it). The next pull finds that file complete at once, re-checks its resumed chunks
and queues the bad one on the same fetch pool that is still downloading the other file:
the chunk is downloaded once more, the file committed right, and no more fetch threads
run than the pool allows.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.proxy import proxy
from wreg import Client
from wreg._http import ChunkReader
from wreg._pull import fetch
from wreg.core.manifest import FileEntry, Manifest
from wreg.testing.servers import RunningServer

MiB = 1 << 20


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repair") / "model"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(6 * MiB))
    (root / "b.bin").write_bytes(os.urandom(6 * MiB))
    return root


@pytest.fixture(scope="module")
def manifest(
    server: RunningServer, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Manifest:
    cache = tmp_path_factory.mktemp("pusher")
    digest = Client(server.url, cache_dir=cache).push(model, "repair/model@v1").manifest
    got = httpx.get(f"{server.url}/v1/repositories/repair/model/manifests/{digest}")
    return Manifest.from_json_bytes(got.content)


def leave_interrupted(cache: Path, entry: FileEntry, data: bytes, damaged: int) -> None:
    """The partial file of ``entry``, every chunk recorded, chunk ``damaged`` flipped."""
    offset, bad = list(entry.chunk_offsets())[damaged]
    part = bytearray(data)
    part[offset + bad.size // 2] ^= 0xFF
    tmp = cache / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{entry.digest[7:]}.part").write_bytes(bytes(part))
    (tmp / f"{entry.digest[7:]}.part").chmod(0o600)
    indices = "".join(f"{i}\n" for i in range(len(entry.chunks)))
    record = tmp / f"{entry.digest[7:]}.progress"
    record.write_text(f"wreg-progress 1 {entry.digest} {entry.size}\n{indices}")
    record.chmod(0o600)


class Watch:
    """Fetch pools made, and the most fetch threads reading a chunk at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pools = 0
        self.reading = 0
        self.most_reading = 0
        lock = threading.Lock()
        watch = self

        class CountedPool(ThreadPoolExecutor):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                watch.pools += 1
                super().__init__(*args, **kwargs)

        real_get_into = ChunkReader.get_into

        def get_into(reader: ChunkReader, name: str, digest: str, buf: bytearray) -> int:
            with lock:
                watch.reading += 1
                watch.most_reading = max(watch.most_reading, watch.reading)
            try:
                return real_get_into(reader, name, digest, buf)
            finally:
                with lock:
                    watch.reading -= 1

        monkeypatch.setattr(fetch, "ThreadPoolExecutor", CountedPool)
        monkeypatch.setattr(ChunkReader, "get_into", get_into)


@pytest.mark.parametrize("damaged", [0, -1], ids=["first", "last"])
def test_a_damaged_resumed_chunk_is_fetched_again_on_the_one_pool(
    server: RunningServer,
    model: Path,
    manifest: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damaged: int,
) -> None:
    a, b = (next(f for f in manifest.files if f.path == name) for name in ("a.bin", "b.bin"))
    a_data = (model / "a.bin").read_bytes()
    damaged %= len(a.chunks)
    cache = tmp_path / "cache"
    leave_interrupted(cache, a, a_data, damaged)
    watch = Watch(monkeypatch)
    with proxy(server.url) as p:
        p.delay = 0.05  # b.bin is still downloading when a.bin's repair is queued
        result = Client(p.url, cache_dir=cache, concurrency=2).pull(
            "repair/model@v1", tmp_path / "out"
        )
    assert (tmp_path / "out" / "a.bin").read_bytes() == a_data
    assert (tmp_path / "out" / "b.bin").read_bytes() == (model / "b.bin").read_bytes()
    bad = a.chunks[damaged].digest
    fetched = {c.digest for c in b.chunks} | {bad}
    assert dict(p.gets) == dict.fromkeys(fetched, 1), "only b.bin and the damaged chunk"
    assert result.bytes_resumed == a.size
    assert result.chunks_downloaded == len(fetched)
    assert watch.pools == 1, "the repair made a fetch pool of its own"
    assert watch.most_reading <= 2, watch.most_reading
    assert list((cache / "tmp").iterdir()) == []
