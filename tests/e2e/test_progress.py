"""Progress through a real server with the real model: every phase's advances add up to
its total and never pass it, come as the work is done (many per large file), on one
thread; the totals are what the result says was hashed, uploaded, downloaded.

One registry for the module, empty at the start: the first push is a newcomer's (every
chunk missing, uploads running while later files are still hashed: the case that drew
``91,618.9/51.7 kB``), then re-pushes, the fine-tune, a cold pull and a warm one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_pull_repair import leave_interrupted
from wreg import Client
from wreg._results import PullResult, PushResult
from wreg.core.manifest import Manifest
from wreg.core.sizes import CHUNK_MAX
from wreg.testing.realdata import WEIGHTS_FILE, base_model, variant
from wreg.testing.servers import RunningServer


@dataclass
class Phase:
    description: str
    total: int
    advances: list[int] = field(default_factory=list)
    overrun: int | None = None
    """The first done count past ``total``, if any."""

    @property
    def done(self) -> int:
        return sum(self.advances)


class Recorder:
    """A ``wreg.Progress`` that keeps every call, and the threads they came from."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.threads: set[int] = set()
        self.orphans = 0  # advances before any phase started

    def start(self, description: str, total: int) -> None:
        self.threads.add(threading.get_ident())
        self.phases.append(Phase(description, total))

    def advance(self, amount: int) -> None:
        self.threads.add(threading.get_ident())
        if not self.phases:
            self.orphans += amount
            return
        phase = self.phases[-1]
        phase.advances.append(amount)
        if phase.done > phase.total and phase.overrun is None:
            phase.overrun = phase.done

    def names(self) -> list[str]:
        return [p.description for p in self.phases]

    def phase(self, description: str) -> Phase:
        (found,) = [p for p in self.phases if p.description == description]
        return found

    def assert_consistent(self) -> None:
        """Each phase ends exactly at its total, never past it; one thread calls."""
        assert self.orphans == 0
        assert len(self.threads) <= 1
        for p in self.phases:
            assert p.overrun is None, f"{p.description}: {p.overrun} done of {p.total}"
            assert all(a > 0 for a in p.advances), p.description
            assert (p.description, p.done) == (p.description, p.total)


@dataclass
class Run:
    recorder: Recorder
    result: PushResult | PullResult


@pytest.fixture(scope="module")
def runs(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every operation of the module, in order, each with its own recorder."""
    base, finetune = base_model(), variant("finetune")
    tmp = tmp_path_factory.mktemp("progress")
    client = Client(server.url, cache_dir=tmp / "cache")
    fresh = Client(server.url, cache_dir=tmp / "other-cache")
    steps: dict[str, Callable[[Recorder], PushResult | PullResult]] = {
        "first push": lambda p: client.push(base, "progress/minilm@v1", progress=p),
        "re-push": lambda p: client.push(base, "progress/minilm@v1", progress=p),
        "re-push, cold cache": lambda p: fresh.push(base, "progress/minilm@v2", progress=p),
        "fine-tune push": lambda p: client.push(finetune, "progress/minilm@ft", progress=p),
        "cold pull": lambda p: fresh.pull("progress/minilm@v1", tmp / "v1", progress=p),
        "warm pull": lambda p: fresh.pull("progress/minilm@ft", tmp / "ft", progress=p),
    }
    out = {}
    for name, step in steps.items():
        recorder = Recorder()
        out[name] = Run(recorder, step(recorder))
    return out


def test_the_first_push_hashes_and_uploads_everything_each_bar_ending_at_its_total(
    runs: dict[str, Run],
) -> None:
    run = runs["first push"]
    result = run.result
    assert isinstance(result, PushResult)
    run.recorder.assert_consistent()
    assert run.recorder.names() == ["hashing", "uploading"]
    hashing, uploading = run.recorder.phases
    assert hashing.total == result.bytes_hashed == result.bytes_total
    # Raw bytes of the chunks the registry lacked: all of them, the first time.
    assert uploading.total == result.bytes_new == result.bytes_total


def test_a_large_file_moves_the_bars_many_times_not_once(runs: dict[str, Run]) -> None:
    run = runs["first push"]
    weights = (base_model() / WEIGHTS_FILE).stat().st_size  # about 90 MB, ~22 chunks
    hashing, uploading = run.recorder.phases
    # Once per file would be 13 advances; the weights alone give one per 4 MiB hashed.
    assert len(hashing.advances) >= weights // (4 << 20)
    assert max(hashing.advances) <= 2 * CHUNK_MAX
    assert len(uploading.advances) >= weights // CHUNK_MAX
    assert max(uploading.advances) <= CHUNK_MAX


def test_a_re_push_of_unchanged_files_has_no_phase_at_all(runs: dict[str, Run]) -> None:
    run = runs["re-push"]
    assert isinstance(run.result, PushResult)
    assert (run.result.bytes_hashed, run.result.bytes_new) == (0, 0)  # the stat cache
    assert run.recorder.phases == []
    run.recorder.assert_consistent()


def test_a_re_push_with_a_cold_stat_cache_hashes_but_has_nothing_to_upload(
    runs: dict[str, Run],
) -> None:
    run = runs["re-push, cold cache"]
    assert isinstance(run.result, PushResult)
    run.recorder.assert_consistent()
    assert run.recorder.names() == ["hashing"]
    assert run.recorder.phase("hashing").total == run.result.bytes_total
    assert run.result.bytes_new == 0


def test_the_fine_tune_push_uploads_only_the_changed_chunks(runs: dict[str, Run]) -> None:
    run = runs["fine-tune push"]
    result = run.result
    assert isinstance(result, PushResult)
    run.recorder.assert_consistent()
    assert run.recorder.names() == ["hashing", "uploading"]
    assert run.recorder.phase("uploading").total == result.bytes_new
    assert 0 < result.bytes_new < result.bytes_total / 2


def test_a_cold_pull_downloads_every_file_chunk_by_chunk(runs: dict[str, Run]) -> None:
    run = runs["cold pull"]
    result = run.result
    assert isinstance(result, PullResult)
    run.recorder.assert_consistent()
    assert run.recorder.names() == ["downloading"]
    downloading = run.recorder.phase("downloading")
    assert downloading.total == result.bytes_total
    weights = (base_model() / WEIGHTS_FILE).stat().st_size
    assert len(downloading.advances) >= weights // CHUNK_MAX
    assert max(downloading.advances) <= CHUNK_MAX


def test_a_warm_pull_counts_chunks_from_the_node_cache_and_the_wire_once(
    runs: dict[str, Run],
) -> None:
    run = runs["warm pull"]
    result = run.result
    assert isinstance(result, PullResult)
    run.recorder.assert_consistent()
    assert run.recorder.names() == ["downloading"]
    # Only the weights differ from v1; its unchanged chunks are copied from the cache.
    size = (variant("finetune") / WEIGHTS_FILE).stat().st_size
    assert run.recorder.phase("downloading").total == size
    assert 0 < result.bytes_downloaded < size / 2


def test_a_resumed_pull_counts_kept_chunks_once_and_a_repair_not_again(
    server: RunningServer, tmp_path: Path
) -> None:
    """An interrupted pull left a.bin whole but with a recorded chunk damaged: the next
    pull counts a.bin's chunks as kept, fetches b.bin, repairs the damaged chunk (its
    bytes already counted) and ends exactly at the total."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(os.urandom(6 << 20))
    (model / "b.bin").write_bytes(os.urandom(6 << 20))
    pushed = Client(server.url, cache_dir=tmp_path / "pusher").push(model, "progress/resume@v1")
    got = httpx.get(f"{server.url}/v1/repositories/progress/resume/manifests/{pushed.manifest}")
    a = next(f for f in Manifest.from_json_bytes(got.content).files if f.path == "a.bin")
    assert len(a.chunks) > 1
    cache = tmp_path / "cache"
    leave_interrupted(cache, a, (model / "a.bin").read_bytes(), damaged=1)
    recorder = Recorder()
    result = Client(server.url, cache_dir=cache).pull(
        "progress/resume@v1", tmp_path / "out", progress=recorder
    )
    assert result.bytes_resumed == a.size
    assert (tmp_path / "out" / "a.bin").read_bytes() == (model / "a.bin").read_bytes()
    recorder.assert_consistent()
    assert recorder.names() == ["downloading"]
    assert recorder.phase("downloading").total == result.bytes_total == 12 << 20
