"""Transfer engine and node cache, side by side with curl, cp and casync (issue 11, item 7).

Generates (once, cached under ``.cache/testdata/bench-transfer-v2-<MiB>-<shards>``) a model
of about ``--size-gib`` from the real all-MiniLM-L6-v2 weights: ``--shards`` (12) fp32
safetensors shards whose tensors are the real ones, tiled, each copy with its low mantissa
byte re-randomised so no chunk repeats (the exponent planes, what the codec compresses,
stay real; a shard holds at least one copy of the 90.9 MB, so 12 shards are at least
1.09 GB), plus the model's config and tokenizer files; and a fine-tune of it (the
tensors of two encoder layers in the last shard perturbed). Then starts, on 127.0.0.1, two
``wreg-server`` (embedded default: SQLite + files), one with auth off and one with
``WREG_AUTH=on`` (pulled with a ``pull:bench/*`` token in ``WREG_TOKEN``), ``nginx``
serving the raw files and a casync store, and a second ``nginx`` in front of the auth-off
registry that serves its chunk files with ``sendfile`` and proxies the rest.

``--runs`` interleaved rounds each measure every row once (round 1: all rows, round 2:
all rows, ...), each from the state it needs (outputs removed, a fresh registry data
directory for cold push, an empty node cache for cold pull, one just filled by an
unmeasured pull of the model for warm pull and the fine-tune: a blob whose ctime moved,
as a hardlinked ``-o`` file's removal moves it, is re-hashed, so no cache is reused
across rounds), after ``--idle`` seconds of idle so freed memory is equally cold. The rows:

- cold push ``wreg push`` (fresh registry, empty stat cache) vs ``casync make``;
- start-up: ``wreg --help``, and the imports a warm pull needs
  (``python -c "import wreg.cli, wreg._client"``);
- re-push of the unchanged directory;
- cold pull ``wreg pull REF -o DIR`` (empty node cache) from ``wreg-server`` with auth
  off, with auth on, and through the nginx front; through the front again with
  ``WREG_CONCURRENCY=1`` and ``=2`` (fetch-thread scaling: one thread per transfer);
- the baselines ``curl --parallel --parallel-max 8`` of the raw files from nginx,
  ``cp -r`` of them, and ``casync extract`` from nginx;
- warm pull (everything cached; ``-o`` into a new directory);
- pull of the fine-tune with the base cached (bytes on the wire vs changed bytes).

Every row reports the median wall time with its min-max spread; client CPU seconds per
GB of the model (user + system of the command's process tree: ``getrusage`` of the
reaped children around it); server CPU seconds per GB (``utime + stime`` in
``/proc/PID/stat`` of the server that answers, its children included: ``wreg-server``, or
nginx's master and workers for curl and casync; the front rows count both); client peak
RSS (``/usr/bin/time -v``) and server peak RSS (``VmHWM``, reset before each command
through ``/proc/PID/clear_refs``). "Against the targets" compares rows of the same run;
ratios of two rows are taken per round, with their spread across rounds.

    .venv/bin/python bench/transfer.py [--size-gib 1] [--shards 12] [--runs 3] [--idle 5] [--write]

Needs ``nginx`` (Debian ``nginx-light``), ``casync``, ``curl`` and ``/usr/bin/time``
(``time``): ``apt-get install nginx-light casync time curl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from results import bench_parser, machine, update_results
from wreg.testing import realdata
from wreg.testing.procs import free_port, stop_process, wait_for_http
from wreg.testing.servers import RunningServer, run_wreg_server, start_server

BIN = Path(sys.executable).parent
WREG = str(BIN / "wreg")
PYTHON = str(BIN / "python")
ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


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


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers, nginx workers)."""
    out = subprocess.run(  # noqa: S603 - pgrep (procps) on our own process's pid
        ["pgrep", "-P", str(pid)],  # noqa: S607 - from PATH, like nginx, curl
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [pid, *(p for child in map(int, out) for p in tree(child))]


def pids(roots: Sequence[int]) -> list[int]:
    return [p for root in roots for p in tree(root)]


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU of the processes under ``roots`` (and their reaped children)."""
    ticks = 0
    for pid in pids(roots):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:  # exited since pgrep saw it
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 onwards
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / TICK


def reset_peak(roots: Sequence[int]) -> None:
    """Restart the peak RSS (``VmHWM``) count of the processes from their current RSS."""
    for pid in pids(roots):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_kb(roots: Sequence[int]) -> int:
    """Peak RSS in KB since the last ``reset_peak``, summed over the processes."""
    peak = 0
    for pid in pids(roots):
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
class Sample:
    """One command's wall seconds, its process tree's CPU seconds and peak RSS (KB)."""

    wall: float
    cpu: float
    rss_kb: int
    stdout: str


def measured(cmd: list[str], env: dict[str, str] | None = None) -> Sample:
    """Run ``cmd`` under /usr/bin/time -v: wall, CPU of the tree (children reaped), RSS."""
    with tempfile.NamedTemporaryFile("r") as report:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run(  # noqa: S603 - /usr/bin/time around the bench's own commands
            ["/usr/bin/time", "-v", "-o", report.name, *cmd],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
        rss = 0
        for line in report.read().splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.rsplit(":", 1)[1])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Sample(wall, cpu, rss, out.stdout)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KB, stdout) of one command under /usr/bin/time -v."""
    s = measured(cmd, env)
    return s.wall, s.rss_kb, s.stdout


@dataclass
class Row:
    name: str
    seconds: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)  # empty: no server answers
    client_kb: list[int] = field(default_factory=list)
    server_kb: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def clean(*paths: Path) -> None:
    """Remove the paths. Only directories are made writable first: a file may be a
    hardlink of a cache blob, whose mode and ctime the cache checks."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            subprocess.run(  # noqa: S603 - find from PATH, on the bench's own temp dir
                ["find", str(p), "-type", "d", "-exec", "chmod", "u+w", "{}", "+"],  # noqa: S607
                check=False,
            )
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def create_token(server: RunningServer, name: str, scope: str) -> str:
    done = run_wreg_server(
        "token", "create", name, "--scope", scope, "--json", "--data", str(server.data)
    )
    if done.returncode != 0:
        raise RuntimeError(f"wreg-server token create failed: {done.stderr}")
    token: str = json.loads(done.stdout)["token"]
    return token


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    for tool in ("nginx", "casync", "/usr/bin/time", "curl", "pgrep"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install nginx-light casync time curl", file=sys.stderr)
            return 2

    model, tuned = generate(int(args.size_gib * (1 << 30)), args.shards)
    size = tree_size(model)
    files = sorted(p.relative_to(model) for p in model.rglob("*") if p.is_file())
    print(f"model: {model} ({size / 1e9:.2f} GB, {len(files)} files)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="wreg-bench-", dir=ROOT / ".cache"))
    rows: dict[str, Row] = {}
    servers: list[RunningServer] = []
    nginxes: list[subprocess.Popen[bytes]] = []
    # No WREG_* setting of the caller's (a token, a fetch-thread count) leaks into a row.
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("WREG_")}
    base_env["XDG_CONFIG_HOME"] = str(work / "config")  # no stored credentials either
    out_dir = work / "out"

    def env(url: str, cache: Path, **extra: str) -> dict[str, str]:
        return base_env | {"WREG_URL": url, "WREG_CACHE": str(cache)} | extra

    def measure(
        name: str, cmd: list[str], env: dict[str, str] | None = None, serving: Sequence[int] = ()
    ) -> Sample:
        time.sleep(args.idle)
        reset_peak(serving)
        server_cpu = cpu_seconds(serving)
        s = measured(cmd, env)
        server_cpu = cpu_seconds(serving) - server_cpu
        row = rows.setdefault(name, Row(name))
        row.seconds.append(s.wall)
        row.client_cpu.append(s.cpu)
        row.client_kb.append(s.rss_kb)
        if serving:
            row.server_cpu.append(server_cpu)
            row.server_kb.append(peak_kb(serving))
        print(
            f"  {name:<44} {s.wall:7.3f} s  client {s.cpu:6.2f} CPU-s {s.rss_kb / 1024:5.0f} MB"
            + (f"  server {server_cpu:6.2f} CPU-s" if serving else ""),
            flush=True,
        )
        return s

    def setup(cmd: list[str], env: dict[str, str]) -> None:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - this venv's wreg, on the bench's generated model
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")

    try:
        # -- the state the rows share ---------------------------------------------
        site = work / "site"
        site.mkdir()
        os.symlink(model, site / "model")
        store, caidx = site / "store", site / "model.caidx"
        nginx, ng_url = start_nginx(site, work)
        nginxes.append(nginx)
        # The auth-off registry: re-push, the cold pulls, warm pull, fine-tune.
        main_srv = start_server(work / "data")
        servers.append(main_srv)
        push_cache = work / "push-cache"  # the stat cache re-push runs with
        setup([WREG, "push", str(model), "bench/model@v1"], env(main_srv.url, push_cache))
        setup([WREG, "push", str(tuned), "bench/model@ft"], env(main_srv.url, push_cache))
        # The auth-on registry, holding the same model.
        auth_srv = start_server(work / "auth-data", {"WREG_AUTH": "on"})
        servers.append(auth_srv)
        pusher = create_token(auth_srv, "bench-push", "push:bench/*")
        reader = create_token(auth_srv, "bench-pull", "pull:bench/*")
        setup(
            [WREG, "push", str(model), "bench/model@v1"],
            env(auth_srv.url, work / "auth-push-cache", WREG_TOKEN=pusher),
        )
        # The auth-off registry with nginx in front: chunk GETs served from the file
        # store with sendfile (the X-Accel-Redirect idea), the rest proxied; the header
        # that invites runs is dropped, so large chunks come as GETs nginx serves.
        objects = main_srv.data / "objects" / "chunks"
        front_conf = (
            '        location ~ "^/v1/repositories/.+/chunks/'
            'blake3:([0-9a-f]{2})([0-9a-f]{62})$" {\n'
            "            limit_except GET HEAD { deny all; }\n"
            f"            alias {objects}/$1/$1$2;\n"
            "        }\n"
            f"        location / {{ proxy_pass {main_srv.url}; client_max_body_size 64m;\n"
            # as deploy/nginx-cache.conf: clients fetch large chunks here, not in runs
            "            proxy_hide_header X-Wreg-Large-Batches; }"
        )
        front, front_url = start_nginx(site, work, "front", front_conf)
        nginxes.append(front)
        curl = ["curl", "--parallel", "--parallel-max", "8", "-sS", "--fail", "--create-dirs"]
        for f in files:
            curl += ["-o", str(out_dir / f), f"{ng_url}/model/{f}"]
        changed = changed_bytes(model, tuned)

        # -- the rows, in the order of the table ----------------------------------
        def cold_push() -> None:
            data, cache = work / "cold-push-data", work / "cold-push-cache"
            clean(data, cache)
            srv = start_server(data)
            try:
                cmd = [WREG, "push", str(model), "bench/model@v1"]
                measure("cold push: wreg push", cmd, env(srv.url, cache), [srv.process.pid])
            finally:
                srv.stop()
            clean(data, cache)

        def casync_make() -> None:
            clean(store, caidx)
            cmd = ["casync", "make", f"--store={store}", str(caidx), str(model)]
            measure("cold push: casync make", cmd)

        def help_() -> None:
            measure("wreg --help", [WREG, "--help"])

        def imports() -> None:
            measure("warm pull imports", [PYTHON, "-c", "import wreg.cli, wreg._client"])

        def repush() -> None:
            cmd = [WREG, "push", str(model), "bench/model@v1", "--json"]
            s = measure(
                "re-push unchanged", cmd, env(main_srv.url, push_cache), [main_srv.process.pid]
            )
            got = json.loads(s.stdout)
            rows[
                "re-push unchanged"
            ].note = f"hashed {got['bytes_hashed']} B, sent {got['bytes_sent']} B"

        def cold_pull(
            name: str, srv: RunningServer, url: str, via: Sequence[int] = (), **extra: str
        ) -> Callable[[], None]:
            def run() -> None:
                cache = work / "pull-cache"
                clean(out_dir, cache)
                cmd = [WREG, "pull", "bench/model@v1", "-o", str(out_dir)]
                measure(name, cmd, env(url, cache, **extra), [srv.process.pid, *via])

            return run

        def curl_() -> None:
            clean(out_dir)
            measure("cold pull: curl --parallel 8", curl, serving=[nginx.pid])

        def cp() -> None:
            clean(out_dir)
            measure(CP, ["cp", "-r", str(model), str(out_dir)])

        def casync_extract() -> None:
            clean(out_dir)
            cmd = ["casync", "extract", f"--store={ng_url}/store/", f"{ng_url}/model.caidx"]
            measure("cold pull: casync extract", [*cmd, str(out_dir)], serving=[nginx.pid])

        def base_cache(cache: Path) -> Path:
            """A node cache just filled with the model (an unmeasured pull via the front).
            Made afresh each round: a hardlinked ``-o`` file, its removal or ``cp -al``
            each move a blob's ctime, after which the cache re-hashes the blob."""
            clean(cache)
            setup([WREG, "pull", "bench/model@v1"], env(front_url, cache))
            return cache

        def warm_pull() -> None:
            cache = base_cache(work / "warm-cache")
            clean(out_dir)
            cmd = [WREG, "pull", "bench/model@v1", "-o", str(out_dir)]
            measure("warm pull", cmd, env(main_srv.url, cache), [main_srv.process.pid])

        def finetune() -> None:
            trial = base_cache(work / "ft-cache")
            clean(out_dir)
            cmd = [WREG, "pull", "bench/model@ft", "-o", str(out_dir), "--json"]
            name = "fine-tune pull, base cached"
            s = measure(name, cmd, env(main_srv.url, trial), [main_srv.process.pid])
            got = json.loads(s.stdout)
            rows[name].note = (
                f"downloaded {got['bytes_downloaded'] / 1e6:.1f} MB on the wire for "
                f"{changed / 1e6:.1f} MB of changed tensors; "
                f"{got['bytes_from_cache'] / 1e6:.0f} MB from the cache"
            )

        cases = [
            cold_push,
            casync_make,
            help_,
            imports,
            repush,
            cold_pull(PULL, main_srv, main_srv.url),
            cold_pull(PULL_AUTH, auth_srv, auth_srv.url, WREG_TOKEN=reader),
            cold_pull(PULL_FRONT, main_srv, front_url, [front.pid]),
            cold_pull(PULL_1, main_srv, front_url, [front.pid], WREG_CONCURRENCY="1"),
            cold_pull(PULL_2, main_srv, front_url, [front.pid], WREG_CONCURRENCY="2"),
            curl_,
            cp,
            casync_extract,
            warm_pull,
            finetune,
        ]
        for r in range(args.runs):
            print(f"round {r + 1} of {args.runs}", flush=True)
            for case in cases:
                case()
    finally:
        for s in servers:
            s.stop()
        for proc in nginxes:
            stop_process(proc, 10, signal.SIGQUIT)  # nginx's graceful shutdown
        clean(work)

    report = render(rows, size, len(files), args)
    print(report)
    if args.write:
        command = ".venv/bin/python bench/transfer.py --write  # make bench runs it without --write"
        update_results("transfer", report, command)
    return 0


PULL = "cold pull: wreg pull (wreg-server)"
PULL_AUTH = "cold pull: wreg pull (wreg-server, auth on)"
PULL_FRONT = "cold pull: wreg pull (nginx front)"
PULL_1 = "cold pull: 1 fetch thread (nginx front)"
PULL_2 = "cold pull: 2 fetch threads (nginx front)"
CURL = "cold pull: curl --parallel 8"
CP = "cold pull: cp -r"
# The rows that are not a wreg command's (for the client peak RSS target).
BASELINES = (CURL, CP, "cold pull: casync extract", "cold push: casync make", "warm pull imports")


def spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def render(rows: dict[str, Row], size: int, nfiles: int, args: argparse.Namespace) -> str:
    gb = size / 1e9

    def per_gb(values: list[float]) -> float:
        return statistics.median(values) / gb

    def cpu(values: list[float]) -> str:
        return f"{per_gb(values):.2f}" if values else "-"

    def mb(values: list[int]) -> str:
        return f"{max(values) / 1024:.0f}" if values else "-"

    def ratio(a: str, b: str) -> str:
        """Row a's wall / row b's, per round: median (min-max) across rounds."""
        return spread([x / y for x, y in zip(rows[a].seconds, rows[b].seconds, strict=True)], ".2f")

    lines = [
        f"Machine: {machine()}. Model: {gb:.2f} GB in {nfiles} files ({args.shards} fp32 "
        f"safetensors shards tiled from the real weights). Median of {args.runs} interleaved "
        f"rounds (min-max in brackets), {args.idle:g} s idle before each command; all on "
        "127.0.0.1. CPU is user + system seconds per GB of the model: the client's process "
        "tree; the server's process and children (nginx master + workers for curl and "
        "casync; nginx front + wreg-server for the front rows).",
        "",
        "| measurement | wall s | GB/s | client CPU s/GB | server CPU s/GB "
        "| client peak RSS MB | server peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows.values():
        lines.append(
            f"| {row.name} | {spread(row.seconds)} | {gb / row.median:.2f} | "
            f"{cpu(row.client_cpu)} | {cpu(row.server_cpu)} | {mb(row.client_kb)} | "
            f"{mb(row.server_kb)} |"
        )
    startup = rows["wreg --help"].median
    cold, push = rows[PULL].median, rows["cold push: wreg push"].median
    warm = rows["warm pull"].median - startup
    repush = rows["re-push unchanged"].median - startup
    curl_cpu = per_gb(rows[CURL].client_cpu)
    pull_cpu = per_gb(rows[PULL].client_cpu)
    push_server = per_gb(rows["cold push: wreg push"].server_cpu)
    wreg_rss = [kb for name, row in rows.items() if name not in BASELINES for kb in row.client_kb]
    lines += [
        "",
        f"Against the targets (start-up of `wreg --help` {startup:.3f} s subtracted where "
        "marked; ratios per round, median (min-max)):",
        "",
        f"- cold pull wall vs `curl --parallel 8` (curl's wall / wreg's): wreg-server "
        f"{ratio(CURL, PULL)}, auth on {ratio(CURL, PULL_AUTH)}, nginx front "
        f"{ratio(CURL, PULL_FRONT)}; vs `cp -r`: {ratio(CP, PULL)}",
        f"- client CPU of `wreg pull` minus curl's: {pull_cpu:.2f} - {curl_cpu:.2f} = "
        f"{pull_cpu - curl_cpu:.2f} s/GB (target ≤ 1.2); nginx front "
        f"{per_gb(rows[PULL_FRONT].client_cpu) - curl_cpu:.2f}",
        f"- server CPU per GB served: auth off {per_gb(rows[PULL].server_cpu):.2f}, auth on "
        f"{per_gb(rows[PULL_AUTH].server_cpu):.2f} s/GB (target ≤ 0.5); nginx front + "
        f"wreg-server {per_gb(rows[PULL_FRONT].server_cpu):.2f}, nginx for curl "
        f"{per_gb(rows[CURL].server_cpu):.2f}",
        f"- cold push client CPU: {per_gb(rows['cold push: wreg push'].client_cpu):.2f} s/GB "
        "(target ≤ 1.5)",
        f"- cold push server CPU: {push_server:.2f} s/GB vs curl's pull client CPU + 1.0 = "
        f"{curl_cpu + 1.0:.2f} s/GB (target ≤)",
        f"- cold push vs `casync make` (casync's wall / wreg's): "
        f"{ratio('cold push: casync make', 'cold push: wreg push')} (target ≥ 3x)",
        f"- warm pull minus start-up: {warm:.3f} s = {100 * warm / cold:.1f} % of cold pull "
        "(target ≤ 5 %)",
        f"- re-push unchanged minus start-up: {repush:.3f} s = {100 * repush / push:.1f} % of "
        f"cold push (target ≤ 5 %); {rows['re-push unchanged'].note}",
        f"- start-up: `wreg --help` {spread(rows['wreg --help'].seconds)} s, warm-pull imports "
        f"{spread(rows['warm pull imports'].seconds)} s (target ≤ 0.15 s)",
        f"- fetch workers, 1 vs 2 (1's wall / 2's, nginx front): {ratio(PULL_1, PULL_2)} "
        "(target ≥ 1.7x)",
        f"- fine-tune pull: {rows['fine-tune pull, base cached'].note}",
        f"- client peak RSS: pull {mb(rows[PULL].client_kb)} MB, push "
        f"{mb(rows['cold push: wreg push'].client_kb)} MB, largest of the wreg rows "
        f"{mb(wreg_rss)} MB (target ≤ 300 MB)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
