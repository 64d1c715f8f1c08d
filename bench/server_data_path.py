"""Server data path: what a chunk GET costs the server, side by side with nginx.

Pushes the transfer bench's ~1 GiB model (``bench/transfer.py``'s ``generate``) into a
registry on the embedded default, then downloads every chunk of it ``--runs`` times with
an aiohttp client (``--concurrency`` requests in flight, bodies read and dropped, no
decoding: this isolates the server) from:

- ``uvicorn``: ``wreg-server serve`` as shipped (FileResponse from the file store);
- ``granian``: the same app under granian (``pip install granian``), whose ASGI
  ``http.response.pathsend`` extension lets Starlette's FileResponse hand the file to
  the server's own zero-copy path;
- ``nginx``: nginx (``sendfile on``) serving the object files directly — the floor.

Reports the median wall time, GB/s and the server's CPU seconds per GB (utime + stime of
the server process and its children, from ``/proc``).

    .venv/bin/python bench/server_data_path.py [--runs 5] [--write]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from results import bench_parser, machine, publish
from transfer import ROOT, generate, start_nginx
from wreg.testing.procs import free_port, stop_process, wait_for_http
from wreg.testing.servers import start_server

BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


CHUNKS = "/v1/repositories/bench/datapath/chunks"


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live children."""
    pids = [pid]
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)  # noqa: S603,S607 - pgrep from PATH (procps) on our own server's pid
    pids += [int(p) for p in out.stdout.split()]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


async def fetch_all(urls: list[str], concurrency: int) -> int:
    received = 0
    queue = iter(urls)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal received
            for url in queue:
                async with session.get(url) as r:
                    r.raise_for_status()
                    while piece := await r.content.readany():
                        received += len(piece)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return received


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        print("missing nginx: apt-get install nginx-light", file=sys.stderr)
        return 2
    model, _ = generate(1 << 30, 4)
    work = Path(tempfile.mkdtemp(prefix="wreg-datapath-", dir=ROOT / ".cache"))
    data = work / "data"
    env = dict(os.environ) | {"WREG_DATA": str(data)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        uvicorn = start_server(data, env, args=["--log-level", "warning"], log=work / "serve.log")
        procs.append(uvicorn.process)
        push_env = env | {"WREG_URL": uvicorn.url, "WREG_CACHE": str(work / "c")}
        out = subprocess.run(  # noqa: S603 - this venv's wreg, pushing the bench's generated model
            [str(BIN / "wreg"), "push", str(model), "bench/datapath@v1", "--json"],
            env=push_env,
            capture_output=True,
            text=True,
            check=True,
        )
        manifest = json.loads(out.stdout)["manifest"]
        body = httpx.get(f"{uvicorn.url}/v1/repositories/bench/datapath/manifests/{manifest}")
        digests = sorted({c["digest"] for f in body.json()["files"] for c in f["chunks"]})
        paths = [f"chunks/{d[7:9]}/{d[7:]}" for d in digests]
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {
            "uvicorn (wreg-server serve)": (uvicorn.process, f"{uvicorn.url}{CHUNKS}/")
        }
        if shutil.which(str(BIN / "granian")) or (BIN / "granian").exists():
            gport = free_port()
            granian = subprocess.Popen(  # noqa: S603 - this venv's granian, fixed arguments
                [
                    str(BIN / "granian"),
                    "--interface",
                    "asgi",
                    "--factory",
                    "wreg_server.app:create_app",
                    "--port",
                    str(gport),
                    "--log-level",
                    "warning",
                    "--no-ws",
                ],
                env=env,
            )
            procs.append(granian)
            wait_for_http(f"http://127.0.0.1:{gport}/healthz", granian)
            servers["granian (same app)"] = (granian, f"http://127.0.0.1:{gport}{CHUNKS}/")
        nginx, ng_url = start_nginx(data / "objects", work)
        procs.append(nginx)
        servers["nginx sendfile (floor)"] = (nginx, f"{ng_url}/")
        rows = []
        for name, (proc, base) in servers.items():
            names = digests if CHUNKS in base else paths
            urls = [base + n for n in names]
            walls, cpus, size = [], [], 0
            for _ in range(args.runs):
                time.sleep(2)
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                size = asyncio.run(fetch_all(urls, args.concurrency))
                walls.append(time.perf_counter() - t0)
                cpus.append(cpu_seconds(proc.pid) - cpu0)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            rows.append((name, wall, size / wall / 1e9, cpu / (size / 1e9)))
            print(
                f"{name}: {wall:.2f} s, {size / wall / 1e9:.2f} GB/s, "
                f"{cpu / (size / 1e9):.2f} server CPU s/GB",
                flush=True,
            )
    finally:
        for p in procs:
            stop_process(p)
        shutil.rmtree(work, ignore_errors=True)
    table = [
        f"Machine: {machine()}. {len(digests)} encoded chunks ({size / 1e9:.2f} GB) of the "
        f"transfer bench's model, all fetched {args.runs} times with {args.concurrency} in "
        "flight (aiohttp, bodies dropped); medians.",
        "",
        "| server | wall s | GB/s | server CPU s per GB |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {n} | {w:.2f} | {g:.2f} | {c:.2f} |" for n, w, g, c in rows),
    ]
    command = f".venv/bin/python bench/server_data_path.py --runs {args.runs} --write"
    return publish("server_data_path", "\n".join(table), write=args.write, command=command)


if __name__ == "__main__":
    raise SystemExit(main())
