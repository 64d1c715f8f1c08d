"""The Hugging Face API's downloads, side by side with ``wreg pull`` and curl (issue 13).

On the ~1.1 GB bench model of ``bench/transfer.py`` (12 safetensors shards), client and
server on this machine's cores, medians of ``--rounds`` interleaved rounds, outputs and
caches removed before each:

1. ``huggingface_hub.snapshot_download`` with ``HF_ENDPOINT`` at ``wreg-server serve``
   (auth off), in a fresh process with a fresh ``HF_HUB_CACHE``: each file through
   ``/resolve``, decoded and verified chunk by chunk on the server;
2. ``wreg pull`` of the same model into a cold node cache, from the same server;
3. baseline: ``curl --parallel --parallel-max 8`` of the raw files from nginx (sendfile).

CPU: the client's process tree (``getrusage`` of children) and the server's
(``/proc/PID/stat``), per GB of model. The server's sha256 pass after the push is waited
for before the first round (every file's ETag is a sha256), so it is not in the figures.

Needs ``nginx``, ``curl`` and ``/usr/bin/time`` (``make bench-tools``).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from results import bench_parser, machine, update_results
from transfer import clean, cpu_seconds, generate, measured, spread, start_nginx, tree_size
from wreg.testing.procs import stop_process
from wreg.testing.servers import start_server

ROOT = Path(__file__).resolve().parent.parent
WREG = str(Path(sys.executable).with_name("wreg"))
REPO = "bench/hf"
HF_SCRIPT = "import sys, huggingface_hub as hh; hh.snapshot_download(sys.argv[1], max_workers=8)"
ROWS = (
    "1. snapshot_download via HF_ENDPOINT",
    "2. wreg pull (cold cache)",
    "3. curl --parallel 8 from nginx",
)


def wait_for_sha256(url: str, files: list[str], limit: float = 300) -> None:
    """Until every file's ETag is a sha256 (the server hashes after a commit)."""
    deadline = time.monotonic() + limit
    with httpx.Client(timeout=30) as http:
        for f in files:
            while True:
                etag = http.head(f"{url}/{REPO}/resolve/main/{f}").headers.get("etag", "")
                if re.fullmatch(r'"[0-9a-f]{64}"', etag):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{f} was not hashed within {limit} s")
                time.sleep(0.5)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=12)
    args = parser.parse_args()
    model, _ = generate(args.size_mib << 20, args.shards)
    size = tree_size(model)
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    gb = size / 1e9
    walls: dict[str, list[float]] = {r: [] for r in ROWS}
    client: dict[str, list[float]] = {r: [] for r in ROWS}
    server: dict[str, list[float]] = {r: [] for r in ROWS}
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:
        work = Path(tmp)
        site = work / "site"
        site.mkdir()
        os.symlink(model, site / "model")
        nginx, ng_url = start_nginx(site, work)
        srv = start_server(work / "data")
        try:
            env = os.environ | {"WREG_URL": srv.url, "WREG_CACHE": str(work / "push-cache")}
            measured([WREG, "push", str(model), REPO], env)
            wait_for_sha256(srv.url, files)
            out = work / "out"
            hf_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
            hf_env |= {
                "HF_ENDPOINT": srv.url,
                "HF_HUB_CACHE": str(out),
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
            }
            pull_env = os.environ | {"WREG_URL": srv.url, "WREG_CACHE": str(work / "cold")}
            curl = ["curl", "--parallel", "--parallel-max", "8", "-sS", "--fail", "--create-dirs"]
            for f in files:
                curl += ["-o", str(out / f), f"{ng_url}/model/{f}"]
            runs: dict[str, tuple[list[str], dict[str, str], int]] = {
                ROWS[0]: ([sys.executable, "-c", HF_SCRIPT, REPO], hf_env, srv.process.pid),
                ROWS[1]: ([WREG, "pull", REPO, "-o", str(out)], pull_env, srv.process.pid),
                ROWS[2]: (curl, dict(os.environ), nginx.pid),
            }
            for round_no in range(args.rounds):
                for name, (cmd, run_env, pid) in runs.items():
                    clean(out, work / "cold")
                    time.sleep(3)
                    before = cpu_seconds([pid])
                    sample = measured(cmd, run_env)
                    served = cpu_seconds([pid]) - before
                    walls[name].append(sample.wall)
                    client[name].append(sample.cpu / gb)
                    server[name].append(served / gb)
                    print(
                        f"round {round_no + 1} {name:<40} {sample.wall:6.2f} s  client "
                        f"{sample.cpu / gb:5.2f}  server {served / gb:5.2f} CPU-s/GB",
                        flush=True,
                    )
        finally:
            srv.stop()
            stop_process(nginx, 10)
    base = statistics.median(walls[ROWS[2]])
    ratio: Callable[[str], str] = lambda r: f"{statistics.median(walls[r]) / base:.2f}"  # noqa: E731
    lines = [
        machine(),
        "",
        f"{size / 1e9:.2f} GB in {len(files)} files, {args.rounds} interleaved rounds, "
        "median (min-max).",
        "",
        "| path | wall s | vs curl | client CPU-s/GB | server CPU-s/GB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in ROWS:
        lines.append(
            f"| {r} | {spread(walls[r], '.2f')} | {ratio(r)} | {spread(client[r], '.2f')} | "
            f"{spread(server[r], '.2f')} |"
        )
    body = "\n".join(lines)
    print(body)
    if args.write:
        command = ".venv/bin/python bench/hf_api.py " + " ".join(sys.argv[1:])
        update_results("hf-api", body, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
