"""Transfer engine and node cache, side by side with curl, cp and casync.

Generates (once, cached under ``.cache/testdata/bench-transfer-<MiB>``) a model of about
``--size-gib`` from the real all-MiniLM-L6-v2 weights: ``--shards`` fp32 safetensors
shards whose tensors are the real ones, tiled, each copy with its low mantissa byte
re-randomised so no chunk repeats (the exponent planes, what the codec compresses, stay
real), plus the model's config and tokenizer files; and a fine-tune of it (the tensors of
two encoder layers in the last shard perturbed). Then starts ``wreg-server`` (embedded
default: SQLite + files) and ``nginx`` (serving the same files and a casync store) on
127.0.0.1 and measures, each ``--runs`` times from the same state (outputs removed, then
``--idle`` seconds of idle so freed memory is equally cold), the median wall time of:

- cold pull ``wreg pull REF -o DIR`` (empty node cache) vs ``curl --parallel`` of the raw
  files from nginx, ``cp -r`` of them, and ``casync extract`` from nginx;
- cold push ``wreg push`` (empty registry, empty stat cache) vs ``casync make``;
- warm pull (everything cached; ``-o`` into a new directory) and re-push of the unchanged
  directory, minus the start-up of ``wreg --help``;
- pull of the fine-tune with the base cached (bytes on the wire vs changed bytes);
- peak RSS of the client (``/usr/bin/time -v``) and of the server (``VmHWM``, reset before
  each pull through ``/proc/PID/clear_refs``).

    .venv/bin/python bench/transfer.py [--size-gib 1] [--runs 3] [--idle 5] [--write]

Needs ``nginx`` (Debian ``nginx-light``), ``casync`` and ``/usr/bin/time`` (``time``):
``apt-get install nginx-light casync time``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from results import bench_parser, machine, update_results
from wreg.testing import realdata
from wreg.testing.procs import free_port, stop_process, wait_for_http
from wreg.testing.servers import RunningServer, start_server

BIN = Path(sys.executable).parent
WREG = str(BIN / "wreg")
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the model


def generate(size: int, shards: int) -> tuple[Path, Path]:
    """(model, fine-tune) directories of about ``size`` bytes, built once."""
    cache = realdata.default_cache_dir() / f"bench-transfer-v2-{size >> 20}-{shards}"
    model, tuned = cache / "model", cache / "finetune"
    if (cache / "done").exists():
        return model, tuned
    shutil.rmtree(cache, ignore_errors=True)
    base = realdata.base_model()
    tensors, _meta = realdata.read_safetensors(base / "model.safetensors")
    per_shard = size // shards
    model.mkdir(parents=True)
    tuned.mkdir()
    for f in base.rglob("*"):
        if f.is_file() and f.name != "model.safetensors":
            for d in (model, tuned):
                (d / f.relative_to(base)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, d / f.relative_to(base))
    copy = 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        out: dict[str, tuple[str, tuple[int, ...], np.ndarray | bytes]] = {}
        tuned_out: dict[str, tuple[str, tuple[int, ...], np.ndarray | bytes]] = {}
        total = 0
        first = copy
        while total < per_shard:
            rng = np.random.default_rng(copy)
            for tname, t in tensors.items():
                bits = np.frombuffer(t.data, dtype="<u4")
                noise = rng.integers(0, 256, size=bits.shape, dtype=np.uint32)
                data = bits ^ noise
                key = f"copy{copy}.{tname}"
                out[key] = (t.dtype, t.shape, data)
                tuned_out[key] = out[key]
                if s == shards - 1 and copy == first and realdata.is_finetuned(tname):
                    tweak = data.view("<f4") * np.float32(1.001)
                    tuned_out[key] = (t.dtype, t.shape, tweak.view("<u4"))
                total += t.nbytes
            copy += 1
        realdata.write_safetensors(model / name, out, {"format": "pt"})
        if s == shards - 1:
            realdata.write_safetensors(tuned / name, tuned_out, {"format": "pt"})
        else:
            os.link(model / name, tuned / name)
    (cache / "done").write_text("")
    return model, tuned


def changed_bytes(model: Path, tuned: Path) -> int:
    """Bytes of the tensors the fine-tune changed (its last shard differs)."""
    total = 0
    for shard in sorted(model.glob("*.safetensors")):
        if os.path.samefile(shard, tuned / shard.name):
            continue
        old, _ = realdata.read_safetensors(shard)
        new, _ = realdata.read_safetensors(tuned / shard.name)
        total += sum(t.nbytes for name, t in new.items() if old[name].data != t.data)
    return total


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- services


def pids(server: RunningServer) -> list[int]:
    """The server's process and its children (uvicorn workers)."""
    out = subprocess.run(  # noqa: S603 - pgrep (procps) on our own server's pid
        ["pgrep", "-P", str(server.process.pid)],  # noqa: S607 - from PATH, like nginx, curl
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [server.process.pid, *map(int, out)]


def reset_peak(server: RunningServer) -> None:
    """Restart the server's peak RSS (``VmHWM``) count from its current RSS."""
    for pid in pids(server):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_kb(server: RunningServer) -> int:
    """The server's peak RSS in KB since the last ``reset_peak``, children included."""
    peak = 0
    for pid in pids(server):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return peak


def start_nginx(
    root: Path, work: Path, name: str = "nginx", extra: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    work = work / name
    work.mkdir()
    conf = work / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes 2;
daemon off;
error_log {work}/nginx-error.log;
pid {work}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/nginx-body;
    server {{
        listen 127.0.0.1:{port};
        root {root};
{extra}
    }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])  # noqa: S603,S607 - nginx from PATH (nginx-light), on our own config
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/nothing-here", proc, timeout=10)  # any answer: it is up
    except BaseException:
        stop_process(proc, 10, signal.SIGQUIT)
        raise
    return proc, url


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    name: str
    seconds: list[float] = field(default_factory=list)
    client_kb: list[int] = field(default_factory=list)
    server_kb: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KB, stdout) of one command under /usr/bin/time -v."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        out = subprocess.run(  # noqa: S603 - /usr/bin/time around the bench's own commands
            ["/usr/bin/time", "-v", "-o", report.name, *cmd],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
        rss = 0
        for line in report.read().splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.rsplit(":", 1)[1])
    return wall, rss, out.stdout


def clean(*paths: Path) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            subprocess.run(["chmod", "-R", "u+w", str(p)], check=False)  # noqa: S603,S607 - chmod from PATH, on the bench's own temp dir
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    for tool in ("nginx", "casync", "/usr/bin/time", "curl"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install nginx-light casync time curl", file=sys.stderr)
            return 2

    model, tuned = generate(int(args.size_gib * (1 << 30)), args.shards)
    size = tree_size(model)
    files = sorted(p.relative_to(model) for p in model.rglob("*") if p.is_file())
    print(f"model: {model} ({size / 1e9:.2f} GB, {len(files)} files)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="wreg-bench-", dir=ROOT / ".cache"))
    site = work / "site"
    site.mkdir()
    os.symlink(model, site / "model")
    store = site / "store"
    rows: dict[str, Row] = {}
    servers: list[RunningServer] = []
    nginx, ng_url = start_nginx(site, work)
    nginx_fronts: list[subprocess.Popen[bytes]] = []
    base_env = dict(os.environ)

    def idle() -> None:
        time.sleep(args.idle)

    def env(server: RunningServer, cache: Path) -> dict[str, str]:
        return base_env | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}

    def record(name: str, wall: float, rss: int = 0, server_kb: int = 0) -> None:
        row = rows.setdefault(name, Row(name))
        row.seconds.append(wall)
        if rss:
            row.client_kb.append(rss)
        if server_kb:
            row.server_kb.append(server_kb)
        print(f"  {name:<28} {wall:7.3f} s  client {rss / 1024:6.0f} MB", flush=True)

    try:
        # -- cold push: a fresh registry and an empty stat cache each time ------------
        server: RunningServer | None = None
        for i in range(args.runs):
            if server is not None:
                server.stop()
            server = start_server(work / f"data{i}")
            servers.append(server)
            clean(work / "push-cache")
            idle()
            reset_peak(server)
            wall, rss, _ = timed(
                [WREG, "push", str(model), "bench/model@v1"], env(server, work / "push-cache")
            )
            record("cold push: wreg push", wall, rss, peak_kb(server))
        assert server is not None
        for _ in range(args.runs):
            clean(store, work / "model.caidx")
            idle()
            wall, rss, _ = timed(
                ["casync", "make", f"--store={store}", str(work / "model.caidx"), str(model)]
            )
            record("cold push: casync make", wall, rss)
        shutil.copy(work / "model.caidx", site / "model.caidx")
        subprocess.run(  # noqa: S603 - this venv's wreg, on the bench's generated model
            [WREG, "push", str(tuned), "bench/model@ft"],
            env=env(server, work / "push-cache"),
            check=True,
            capture_output=True,
        )
        # -- start-up and re-push of the unchanged directory --------------------------
        for _ in range(args.runs):
            idle()
            wall, _rss, _ = timed([WREG, "--help"])
            record("wreg --help", wall)
        for _ in range(args.runs):
            idle()
            wall, rss, out = timed(
                [WREG, "push", str(model), "bench/model@v1", "--json"],
                env(server, work / "push-cache"),
            )
            record("re-push unchanged", wall, rss)
            got = json.loads(out)
            rows[
                "re-push unchanged"
            ].note = f"hashed {got['bytes_hashed']} B, sent {got['bytes_sent']} B"
        # -- cold pulls and the baselines ---------------------------------------------
        # The same registry with nginx in front: chunk GETs served from the filesystem
        # store with sendfile (the X-Accel-Redirect idea), the rest proxied.
        objects = work / f"data{args.runs - 1}" / "objects" / "chunks"
        front_conf = (
            '        location ~ "^/v1/repositories/.+/chunks/'
            'blake3:([0-9a-f]{2})([0-9a-f]{62})$" {\n'
            "            limit_except GET HEAD { deny all; }\n"
            f"            alias {objects}/$1/$1$2;\n"
            "        }\n"
            f"        location / {{ proxy_pass {server.url}; client_max_body_size 64m; }}"
        )
        front, front_url = start_nginx(site, work, "front", front_conf)
        nginx_fronts.append(front)
        out_dir, cache = work / "out", work / "pull-cache"
        for label, url in (("wreg-server", server.url), ("nginx front", front_url)):
            for _ in range(args.runs):
                clean(out_dir, cache)
                idle()
                reset_peak(server)
                wall, rss, _ = timed(
                    [WREG, "pull", "bench/model@v1", "-o", str(out_dir)],
                    env(server, cache) | {"WREG_URL": url},
                )
                record(f"cold pull: wreg pull ({label})", wall, rss, peak_kb(server))
        curl = ["curl", "--parallel", "--parallel-max", "16", "-sS", "--fail", "--create-dirs"]
        for f in files:
            curl += ["-o", str(out_dir / f), f"{ng_url}/model/{f}"]
        for _ in range(args.runs):
            clean(out_dir)
            idle()
            wall, rss, _ = timed(curl)
            record("cold pull: curl --parallel", wall, rss)
        for _ in range(args.runs):
            clean(out_dir)
            idle()
            wall, rss, _ = timed(["cp", "-r", str(model), str(out_dir)])
            record("cold pull: cp -r", wall, rss)
        for _ in range(args.runs):
            clean(out_dir)
            idle()
            wall, rss, _ = timed(
                [
                    "casync",
                    "extract",
                    f"--store={ng_url}/store/",
                    f"{ng_url}/model.caidx",
                    str(out_dir),
                ]
            )
            record("cold pull: casync extract", wall, rss)
        # -- warm pull: everything cached, -o into a new directory --------------------
        subprocess.run(  # noqa: S603 - this venv's wreg, on the bench's generated model
            [WREG, "pull", "bench/model@v1"],
            env=env(server, cache),
            check=True,
            capture_output=True,
        )
        for _ in range(args.runs):
            clean(out_dir)
            idle()
            wall, rss, _ = timed(
                [WREG, "pull", "bench/model@v1", "-o", str(out_dir)], env(server, cache)
            )
            record("warm pull", wall, rss)
        # -- fine-tune with the base cached -------------------------------------------
        changed = changed_bytes(model, tuned)
        for _ in range(args.runs):
            trial = work / "ft-cache"
            clean(trial, out_dir)
            subprocess.run(["cp", "-al", str(cache), str(trial)], check=True)  # noqa: S603,S607 - cp from PATH, between the bench's own temp dirs
            for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
                if (trial / name).exists():
                    (trial / name).unlink()
                    shutil.copyfile(cache / name, trial / name)
            idle()
            wall, rss, out = timed(
                [WREG, "pull", "bench/model@ft", "-o", str(out_dir), "--json"], env(server, trial)
            )
            record("fine-tune pull, base cached", wall, rss)
            got = json.loads(out)
            rows["fine-tune pull, base cached"].note = (
                f"downloaded {got['bytes_downloaded'] / 1e6:.1f} MB on the wire for "
                f"{changed / 1e6:.1f} MB of changed tensors; "
                f"{got['bytes_from_cache'] / 1e6:.0f} MB from the cache"
            )
    finally:
        for s in servers:
            s.stop()
        for proc in (nginx, *nginx_fronts):
            stop_process(proc, 10, signal.SIGQUIT)  # nginx's graceful shutdown
        clean(work)

    report = render(rows, size, len(files), args)
    print(report)
    if args.write:
        command = ".venv/bin/python bench/transfer.py --write  # make bench runs it without --write"
        update_results("transfer", report, command)
    return 0


def render(rows: dict[str, Row], size: int, nfiles: int, args: argparse.Namespace) -> str:
    startup = rows["wreg --help"].median

    def gbps(row: Row) -> str:
        return f"{size / row.median / 1e9:.2f}"

    def mb(values: list[int]) -> str:
        return f"{max(values) / 1024:.0f}" if values else "-"

    lines = [
        f"Machine: {machine()}. Model: {size / 1e9:.2f} GB in {nfiles} files ({args.shards} "
        f"fp32 safetensors shards tiled from the real weights). Median of {args.runs} runs, "
        f"{args.idle:g} s idle before each; all on 127.0.0.1.",
        "",
        "| measurement | median s | GB/s | min-max s | client peak RSS MB | server peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows.values():
        lines.append(
            f"| {row.name} | {row.median:.3f} | {gbps(row)} | "
            f"{min(row.seconds):.3f}-{max(row.seconds):.3f} | {mb(row.client_kb)} | "
            f"{mb(row.server_kb)} |"
        )
    cold = rows["cold pull: wreg pull (wreg-server)"].median
    front = rows["cold pull: wreg pull (nginx front)"].median
    push = rows["cold push: wreg push"].median
    warm = rows["warm pull"].median - startup
    repush = rows["re-push unchanged"].median - startup
    lines += [
        "",
        f"Against the targets (start-up of `wreg --help` {startup:.3f} s subtracted where marked):",
        "",
        f"- cold pull from wreg-server vs `curl --parallel`: "
        f"{rows['cold pull: curl --parallel'].median / cold:.2f}x its speed; vs `cp -r`: "
        f"{rows['cold pull: cp -r'].median / cold:.2f}x (targets ≥ 1.0x and ≥ 0.9x)",
        f"- cold pull through the nginx front vs `curl --parallel`: "
        f"{rows['cold pull: curl --parallel'].median / front:.2f}x; vs `cp -r`: "
        f"{rows['cold pull: cp -r'].median / front:.2f}x",
        f"- cold push vs `casync make`: {rows['cold push: casync make'].median / push:.2f}x "
        "faster (target ≥ 5x)",
        f"- warm pull minus start-up: {warm:.3f} s = {100 * warm / cold:.1f} % of cold pull "
        "(target ≤ 5 %)",
        f"- re-push unchanged minus start-up: {repush:.3f} s = {100 * repush / push:.1f} % of cold "
        f"push (target ≤ 5 %); {rows['re-push unchanged'].note}",
        f"- fine-tune pull: {rows['fine-tune pull, base cached'].note}",
        f"- client peak RSS: pull {mb(rows['cold pull: wreg pull (wreg-server)'].client_kb)} MB, "
        "push "
        f"{mb(rows['cold push: wreg push'].client_kb)} MB (target ≤ 300 MB)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
