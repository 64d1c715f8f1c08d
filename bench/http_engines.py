"""HTTP engines for chunk bodies: wall and client CPU per GB, with and without decode.

Serves the encoded chunk files of a pushed model (``--objects``: a file store's
``objects/chunks`` directory; by default the transfer bench's model is pushed to a fresh
``wreg-server`` first) with ``nginx`` (2 workers, ``sendfile``) on 127.0.0.1, so the
server costs almost nothing and the client is what is measured. Every engine fetches
every chunk into reused buffers, ``--runs`` times interleaved, and reports the median
wall time with its spread and the client's CPU seconds per GB of chunk bytes
(``getrusage`` of this process: user + system, kernel socket copies included):

- ``aiohttp``: one event loop, ``readany`` pieces copied into the buffer (the pull's
  engine before issue 11);
- ``threads``: ``http.client`` in N blocking threads, ``readinto`` the buffer (the socket
  read happens outside the GIL, straight into the buffer: no copy in Python);
- ``pycurl``: one ``CurlMulti``, a write callback copying each piece into the buffer;
- ``obstore``: obstore's ``HTTPStore`` (Rust, reads outside the GIL), bytes kept where
  they land.

With ``--decode`` each worker also decodes and verifies every chunk (what a pull does
before writing): the figure that shows whether the engine scales with workers.

    .venv/bin/python bench/http_engines.py [--runs 5] [--write]
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import importlib.util
import os
import queue
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results import bench_parser, machine, publish
from transfer import generate, start_nginx
from wreg.core import encoding
from wreg.testing.procs import stop_process
from wreg.testing.servers import start_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CAP = 5 << 20  # encoded chunks are at most MAX_CHUNK_ENCODED (a little over 4 MiB)
RAW = 4 << 20

Fetch = Callable[[str, list[str], int, bool], int]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _decode(buf: memoryview, n: int, raw: bytearray, digest: str) -> None:
    encoding.decode_chunk_into(buf[:n], memoryview(raw), digest)


def fetch_threads(url: str, names: list[str], workers: int, decode: bool) -> int:
    host, port = url.removeprefix("http://").split(":")
    todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    for n in names:
        todo.put(n)
    for _ in range(workers):
        todo.put(None)
    total = [0] * workers

    def work(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        buf = bytearray(CAP)
        view = memoryview(buf)
        raw = bytearray(RAW)
        while (name := todo.get()) is not None:
            conn.request("GET", f"/{name}")
            r = conn.getresponse()
            length = int(r.headers["Content-Length"])
            got = 0
            while got < length:
                k = r.readinto(view[got:length])
                if not k:
                    raise RuntimeError("short body")
                got += k
            total[i] += got
            if decode:
                _decode(view, got, raw, _digest(name))
        conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total)


def fetch_aiohttp(url: str, names: list[str], workers: int, decode: bool) -> int:
    import aiohttp

    async def main() -> int:
        todo = list(reversed(names))
        total = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:

            async def work() -> None:
                nonlocal total
                buf = bytearray(CAP)
                view = memoryview(buf)
                raw = bytearray(RAW)
                while todo:
                    name = todo.pop()
                    async with session.get(f"{url}/{name}") as r:
                        n = 0
                        while piece := await r.content.readany():
                            view[n : n + len(piece)] = piece
                            n += len(piece)
                    total += n
                    if decode:
                        await asyncio.to_thread(_decode, view, n, raw, _digest(name))

            await asyncio.gather(*(work() for _ in range(workers)))
        return total

    return asyncio.run(main())


class _Transfer:
    """One pycurl easy handle with its reused buffers and the chunk it is on."""

    def __init__(self, curl: Any) -> None:
        self.curl = curl
        self.buf = memoryview(bytearray(CAP))
        self.raw = bytearray(RAW)
        self.n = 0
        self.name = ""

    def write(self, piece: bytes) -> None:
        self.buf[self.n : self.n + len(piece)] = piece
        self.n += len(piece)


def fetch_pycurl(url: str, names: list[str], workers: int, decode: bool) -> int:
    """pycurl is not a dependency of the project: ``pip install pycurl`` for this row."""
    pycurl: Any = importlib.import_module("pycurl")
    multi = pycurl.CurlMulti()
    todo = list(reversed(names))
    total = 0
    free = [_Transfer(pycurl.Curl()) for _ in range(workers)]
    by_handle: dict[int, _Transfer] = {}
    active = 0
    while todo or active:
        while free and todo:
            t = free.pop()
            t.n, t.name = 0, todo.pop()
            t.curl.setopt(pycurl.URL, f"{url}/{t.name}")
            t.curl.setopt(pycurl.WRITEFUNCTION, t.write)
            by_handle[id(t.curl)] = t
            multi.add_handle(t.curl)
            active += 1
        while True:
            ret, _ = multi.perform()
            if ret != pycurl.E_CALL_MULTI_PERFORM:
                break
        _, ok, failed = multi.info_read()
        if failed:
            raise RuntimeError(str(failed))
        for curl in ok:
            multi.remove_handle(curl)
            t = by_handle.pop(id(curl))
            total += t.n
            if decode:
                _decode(t.buf, t.n, t.raw, _digest(t.name))
            free.append(t)
            active -= 1
        if not ok:
            multi.select(1.0)
    return total


def fetch_obstore(url: str, names: list[str], workers: int, decode: bool) -> int:
    import obstore
    from obstore.store import HTTPStore

    store = HTTPStore.from_url(url, client_options={"allow_http": True})

    async def main() -> int:
        todo = list(reversed(names))
        total = 0

        async def work() -> None:
            nonlocal total
            raw = bytearray(RAW)
            while todo:
                name = todo.pop()
                got = await obstore.get_async(store, name)
                body = memoryview(await got.bytes_async())
                total += len(body)
                if decode:
                    await asyncio.to_thread(_decode, body, len(body), raw, _digest(name))

        await asyncio.gather(*(work() for _ in range(workers)))
        return total

    return asyncio.run(main())


def _digest(name: str) -> str:
    return "blake3:" + name.rsplit("/", 1)[1]


ENGINES: dict[str, Fetch] = {
    "aiohttp": fetch_aiohttp,
    "threads": fetch_threads,
    "pycurl": fetch_pycurl,
    "obstore": fetch_obstore,
}


def _available(engine: str) -> bool:
    """pycurl is no dependency of the project: its row needs ``pip install pycurl``."""
    return engine != "pycurl" or importlib.util.find_spec("pycurl") is not None


def objects_dir(work: Path) -> Path:
    """Push the transfer bench's model to a fresh server; its chunk files' directory."""
    import subprocess

    model, _tuned = generate(1 << 30, 12)
    server = start_server(work / "data")
    try:
        env = dict(os.environ, WREG_URL=server.url, WREG_CACHE=str(work / "push-cache"))
        subprocess.run(  # noqa: S603 - this venv's wreg on the generated model
            [str(BIN / "wreg"), "push", str(model), "bench/model@v1"],
            env=env,
            check=True,
            capture_output=True,
        )
    finally:
        server.stop()
    return work / "data" / "objects" / "chunks"


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--objects", type=Path, help="a file store's objects/chunks directory")
    parser.add_argument("--engines", default=",".join(e for e in ENGINES if _available(e)))
    parser.add_argument("--workers", default="1,2,8")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wreg-engines-", dir=ROOT / ".cache"))
    objects = args.objects or objects_dir(work)
    names = sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())
    size = sum((objects / n).stat().st_size for n in names)
    for n in names:  # warm the page cache: the server's disk is not what is measured
        (objects / n).read_bytes()
    nginx, url = start_nginx(objects, work)
    cases = [
        (engine, workers, decode)
        for decode in (False, True)
        for engine in args.engines.split(",")
        for workers in map(int, args.workers.split(","))
    ]
    walls: dict[tuple[str, int, bool], list[float]] = {c: [] for c in cases}
    cpus: dict[tuple[str, int, bool], list[float]] = {c: [] for c in cases}
    try:
        for _ in range(args.runs):
            for case in cases:
                engine, workers, decode = case
                cpu, start = _cpu(), time.perf_counter()
                got = ENGINES[engine](url, names, workers, decode)
                walls[case].append(time.perf_counter() - start)
                cpus[case].append(_cpu() - cpu)
                if got != size:
                    raise RuntimeError(f"{engine} fetched {got} of {size} bytes")
                took = walls[case][-1]
                print(f"  {engine:8} x{workers} decode={decode}: {took:.3f} s", flush=True)
    finally:
        stop_process(nginx, 10, signal.SIGQUIT)
    lines = [
        f"Machine: {machine()}. {len(names)} encoded chunks ({size / 1e9:.2f} GB) of the "
        "transfer bench's model (12 fp32 shards), served by nginx (2 workers, sendfile) on "
        f"127.0.0.1 from the page cache; median of {args.runs} interleaved runs (spread in "
        "brackets); CPU is this process's user + system time per GB of chunk bytes.",
        "",
        "| engine | workers | decode + verify | wall s | GB/s | client CPU s per GB |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for case in cases:
        engine, workers, decode = case
        w, c = walls[case], cpus[case]
        lines.append(
            f"| {engine} | {workers} | {'yes' if decode else 'no'} | "
            f"{statistics.median(w):.3f} ({min(w):.3f}-{max(w):.3f}) | "
            f"{size / statistics.median(w) / 1e9:.2f} | "
            f"{statistics.median(c) / size * 1e9:.2f} ({min(c) / size * 1e9:.2f}-"
            f"{max(c) / size * 1e9:.2f}) |"
        )
    return publish("http_engines", "\n".join(lines), write=args.write)


if __name__ == "__main__":
    sys.exit(main())
