"""Per-chunk overhead: push and pull a model of many tiny chunks (issue 11).

A 140 GB model at 4 MiB is ~35 000 chunks; what one request, one index row or one
manifest edge costs per chunk is then what a push or pull costs beyond its bytes. To
measure only that, the model here is one file of ``--chunks`` distinct 16-byte chunks
(random bytes, so nothing dedupes or compresses): the real client (``wreg.Client``)
pushes it over the HTTP API to a real ``wreg-server`` on 127.0.0.1 — with the chunker
swapped for one that cuts 16-byte pieces, as no real format's chunker yields chunks that
small — and then pulls it into an empty node cache. Timed:

- *upload*: from the first chunk request to the last answer (after hashing and the
  missing-chunks query);
- *commit*: the manifest ``PUT`` (every edge recorded, every chunk checked);
- *cold pull*: ``Client.pull`` into an empty cache, wall time and the client's CPU time.

Each on SQLite + files (the default server) and on PostgreSQL + files (a private
cluster from ``tests/services/postgres.py``, installed with apt if missing), with the
batched chunk routes (``.../chunks/upload``, ``.../chunks/fetch``) and without them
(``--singles``: one request per chunk, as before issue 11; ``--singles-chunks`` of them,
since at ~100 requests/s on two cores the full count takes minutes).

    .venv/bin/python bench/many_chunks.py [--chunks 35000] [--singles-chunks 35000]
        [--backends sqlite,postgres] [--write]
"""

from __future__ import annotations

import inspect
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wreg._http
import wreg.core.chunking
from results import bench_parser, machine, publish
from wreg import Client
from wreg.core.chunking import ChunkSpec
from wreg.testing.servers import start_server, upgrade_database

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 16


def tiny_chunks(path: str | os.PathLike[str], *_args: Any) -> list[ChunkSpec]:
    """The bench's chunker: 16-byte pieces."""
    size = os.stat(path).st_size
    return [ChunkSpec(at, min(CHUNK, size - at)) for at in range(0, size, CHUNK)]


class _Timer:
    """Wall time from the first call of the wrapped methods to the last return."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(method):  # ChunkReader's: in fetch threads

            def timed_sync(*args: Any, **kwargs: Any) -> Any:
                with self.lock:
                    if self.first is None:
                        self.first = time.perf_counter()
                    self.calls += 1
                try:
                    return method(*args, **kwargs)
                finally:
                    with self.lock:
                        self.last = max(self.last, time.perf_counter())

            return timed_sync

        async def timed(*args: Any, **kwargs: Any) -> Any:
            if self.first is None:
                self.first = time.perf_counter()
            self.calls += 1
            try:
                return await method(*args, **kwargs)
            finally:
                self.last = time.perf_counter()

        return timed

    @property
    def seconds(self) -> float:
        return 0.0 if self.first is None else self.last - self.first


@contextmanager
def timing(names: list[str], owner: type = wreg._http.Registry) -> Iterator[_Timer]:
    timer = _Timer()
    saved = {n: getattr(owner, n) for n in names}
    try:
        for n, method in saved.items():
            setattr(owner, n, timer.wrap(method))
        yield timer
    finally:
        for n, method in saved.items():
            setattr(owner, n, method)


class SinglesClient(Client):
    """The client as before issue 11: one request per chunk."""

    def _registry(self) -> wreg._http.Registry:
        registry = super()._registry()
        registry.batches = False
        return registry


@dataclass
class Figures:
    backend: str
    mode: str
    chunks: int
    upload_s: float
    upload_requests: int
    commit_s: float
    pull_s: float
    pull_cpu_s: float
    pull_requests: int


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(url: str, tmp: Path, backend: str, batched: bool, count: int) -> Figures:
    model = tmp / f"model-{backend}-{batched}"
    model.mkdir()
    (model / "tiny.bin").write_bytes(os.urandom(CHUNK * count))
    cls = Client if batched else SinglesClient
    ref = f"bench/many-{'batched' if batched else 'singles'}@v1"
    push_client = cls(url, cache_dir=tmp / f"push-cache-{backend}-{batched}")
    with (
        timing(["put_chunk", "put_chunks"]) as upload,
        timing(["put_manifest"]) as commit,
    ):
        push_client.push(model, ref)
    pull_client = cls(url, cache_dir=tmp / f"pull-cache-{backend}-{batched}")
    with timing(["get_into", "fetch_into"], wreg._http.ChunkReader) as fetches:
        cpu, wall = cpu_seconds(), time.perf_counter()
        pull_client.pull(ref)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return Figures(
        backend,
        "batched" if batched else "singles",
        count,
        upload.seconds,
        upload.calls,
        commit.seconds,
        wall,
        cpu,
        fetches.calls,
    )


@contextmanager
def server_for(pg: Any, tmp: Path, label: str) -> Iterator[str]:
    """A fresh registry: SQLite, or a new database of the PostgreSQL cluster ``pg``."""
    data = tmp / f"data-{label}"
    env = {}
    if pg is not None:
        env["WREG_DATABASE_URL"] = pg.url(pg.create_database(f"bench_{label.replace('-', '_')}"))
        upgrade_database(data, env)
    server = start_server(
        data, env, args=["--log-level", "warning"], log=tmp / f"server-{label}.log"
    )
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def postgres_cluster(wanted: bool) -> Iterator[Any]:
    if not wanted:
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from tests.services import postgres

    pg = postgres.start()
    try:
        yield pg
    finally:
        pg.stop()


def render(figures: list[Figures]) -> str:
    lines = [
        f"Machine: {machine()}.",
        "",
        "One file of N distinct 16-byte chunks pushed through `wreg.Client` to a real",
        "`wreg-server` on 127.0.0.1 (files store), then pulled into an empty cache.",
        "*singles*: one request per chunk (the client before issue 11); *batched*: the",
        "batched routes. Targets for 35 000 chunks: upload ≤ 30 s, commit ≤ 1 s,",
        "cold pull ≤ 10 s.",
        "",
        "| index | transfer | chunks | upload s (requests) | commit s | cold pull s "
        "(requests) | pull client CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in figures:
        lines.append(
            f"| {f.backend} | {f.mode} | {f.chunks} | {f.upload_s:.1f} ({f.upload_requests}) "
            f"| {f.commit_s:.2f} | {f.pull_s:.1f} ({f.pull_requests}) | {f.pull_cpu_s:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--chunks", type=int, default=35_000, help="chunks, batched runs")
    parser.add_argument(
        "--singles-chunks", type=int, default=35_000, help="chunks, singles runs (0: skip)"
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    wreg.core.chunking.plan_file = tiny_chunks  # type: ignore[assignment]
    figures = []
    backends = args.backends.split(",")
    with (
        tempfile.TemporaryDirectory(prefix="wreg-many-") as name,
        postgres_cluster("postgres" in backends) as pg,
    ):
        tmp = Path(name)
        for backend in backends:
            runs = [(True, args.chunks)]
            if args.singles_chunks:
                runs.append((False, args.singles_chunks))
            for batched, count in runs:
                label = f"{backend}-{'b' if batched else 's'}"
                with server_for(pg if backend == "postgres" else None, tmp, label) as url:
                    figures.append(run_one(url, tmp, backend, batched, count))
                print(render(figures[-1:]).splitlines()[-1], flush=True)
    return publish("many_chunks", render(figures), write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
