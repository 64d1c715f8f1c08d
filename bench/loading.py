"""Loading a model into memory: ``wreg.Client.stream``/``load`` against pull-then-load,
curl-then-load and runai-model-streamer (issue: the loading SDK).

The model is the transfer bench's (``transfer.generate``: ``--shards`` fp32 safetensors
shards of about ``--size-gib`` tiled from the real all-MiniLM-L6-v2 tensors), pushed once
to a local ``wreg-server`` (auth off, 127.0.0.1) and served raw by ``nginx``. ``--runs``
interleaved rounds each measure every row once, each row in its own process
(``bench/loading_worker.py``), after ``--idle`` seconds of idle:

Cold (an empty node cache each time; the server's and nginx's files stay in page cache):

1. ``wreg pull REF`` (the CLI), then ``safetensors.numpy.load_file`` of every shard of the
   snapshot: time to the full state dict is the pull's wall plus the load's;
2. ``curl --parallel --parallel-max 8`` of the raw files from nginx into a fresh
   directory, then ``load_file`` of every shard;
3. ``wreg.Client.stream(REF)``: time to the first tensor and to the full state dict
   (every tensor kept in a dict);
4. ``stream`` consumed one tensor at a time (each dropped once read): wall and peak RSS;

Warm (a node cache filled by an unmeasured ``wreg pull`` just before):

5. ``load_file`` of the snapshot's files;
6. runai-model-streamer (``SafetensorsStreamer.stream_files`` of the same files, in
   ``.venv-torch``; tensors viewed as uint8 and read through ``.numpy()``);
7. ``wreg.Client.load(REF)``;

Partial: 8. ``stream(REF, shard=(0, 2))`` cold: bytes fetched against the model's tensor
bytes, and time against row 3's.

Every loader reads every byte of every tensor it returns (the same XOR over a uint64
view) before its clock stops: wreg's CPU arrays are copy-on-write maps whose untouched
pages are not read yet. A row's time starts after its process has imported what it needs
(the baseline: ``VmRSS`` then, with ``VmHWM`` reset through ``/proc/self/clear_refs``);
rows 1 and 2 add the whole ``wreg pull``/``curl`` process's wall (the pull's includes the
CLI's start-up). "process s" is the wall of the row's processes, start-up and imports
included. Peak RSS is ``VmHWM`` of the loading process; "above base" subtracts its
baseline (rows 1 and 2: the load step's; the pull's or curl's own peak is in the note).

    .venv/bin/python bench/loading.py [--size-gib 1] [--shards 12] [--runs 3] [--idle 3] [--write]

Needs ``nginx``, ``curl`` and ``/usr/bin/time``, and for row 6 ``.venv-torch`` with
``runai-model-streamer`` (``.venv-torch/bin/pip install runai-model-streamer``); without
it the row says so.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results import bench_parser, machine, update_results
from transfer import clean, generate, measured, spread, start_nginx, tree_size
from wreg._cache import NodeCache
from wreg.core.manifest import Manifest
from wreg.testing.procs import stop_process
from wreg.testing.servers import RunningServer, start_server

BIN = Path(sys.executable).parent
WREG = str(BIN / "wreg")
PYTHON = str(BIN / "python")
ROOT = Path(__file__).resolve().parent.parent
WORKER = str(Path(__file__).with_name("loading_worker.py"))
TORCH_PYTHON = ROOT / ".venv-torch" / "bin" / "python"
REF = "bench/model@v1"

PULL_LOAD = "1. cold: wreg pull + load_file"
CURL_LOAD = "2. cold: curl --parallel 8 + load_file"
STREAM = "3. cold: Client.stream, full state dict"
STREAM_DROP = "4. cold: Client.stream, one tensor at a time"
WARM_FILES = "5. warm: load_file of the cached files"
WARM_RUNAI = "6. warm: runai-model-streamer, cached files"
WARM_LOAD = "7. warm: Client.load"
SHARD = "8. cold: Client.stream(shard=(0, 2))"
SHARD_WIDE = "8b. cold: stream(shard=(0, 2)), tensors spanning >= 4 chunks only"


@dataclass
class Row:
    name: str
    seconds: list[float] = field(default_factory=list)  # to the full state dict
    process: list[float] = field(default_factory=list)  # the processes' wall
    cpu: list[float] = field(default_factory=list)  # the processes' user + system
    first: list[float] = field(default_factory=list)  # to the first tensor (stream rows)
    opened: list[float] = field(default_factory=list)  # Client + stream() returned
    peak_kb: list[int] = field(default_factory=list)
    above_kb: list[int] = field(default_factory=list)
    other_kb: list[int] = field(default_factory=list)  # the pull's or curl's own peak
    parts: list[float] = field(default_factory=list)  # the pull's or curl's wall
    stats: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    note: str = ""


def runai_available() -> str:
    """Empty if row 6 can run, else why not."""
    if not TORCH_PYTHON.exists():
        return f"{TORCH_PYTHON.relative_to(ROOT)} does not exist"
    done = subprocess.run(  # noqa: S603 - the project's torch venv, importing a module
        [str(TORCH_PYTHON), "-c", "import runai_model_streamer, torch"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return (
            "runai-model-streamer does not import in .venv-torch: "
            + (done.stderr.strip().splitlines() or ["?"])[-1]
        )
    return ""


@dataclass
class Layout:
    line: str = ""  # what the table says about it
    wide: list[str] = field(default_factory=list)  # the tensors spanning >= 4 chunks
    wide_bytes: int = 0


def chunk_layout(model: Path, manifest: Manifest) -> Layout:
    """How many chunks the tensors span, and what shard (0, 2) needs of those spanning
    at least 4 (computed from the manifest: chunk bytes overlapping the kept rows)."""
    wide: list[str] = []
    spans: dict[str, int] = {"1": 0, "2-3": 0, ">=4": 0}
    span_bytes: dict[str, int] = dict.fromkeys(spans, 0)
    wide_bytes = wide_needed = 0
    chunk_sizes: list[int] = []
    for entry in manifest.files:
        if not entry.path.endswith(".safetensors"):
            continue
        starts = [offset for offset, _ in entry.chunk_offsets()]
        ends = [offset + chunk.size for offset, chunk in entry.chunk_offsets()]
        chunk_sizes += [chunk.size for chunk in entry.chunks]
        with (model / entry.path).open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header: dict[str, Any] = json.loads(f.read(length))
        base = 8 + length
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = (base + o for o in info["data_offsets"])
            if end == begin:
                continue
            lo = bisect.bisect_right(starts, begin) - 1
            hi = bisect.bisect_right(starts, end - 1) - 1
            span = hi - lo + 1
            key = "1" if span == 1 else "2-3" if span < 4 else ">=4"
            spans[key] += 1
            span_bytes[key] += end - begin
            if span >= 4:
                shape = info["shape"]
                rows = shape[0] if shape else 1
                kept = -(-rows // 2) if shape else 1
                stop = begin + (end - begin) * kept // rows
                last = bisect.bisect_right(starts, stop - 1) - 1
                wide_bytes += end - begin
                wide.append(name)
                wide_needed += ends[last] - starts[lo]
    total = sum(spans.values())
    parts = ", ".join(
        f"{spans[k]} span {k} chunk{'s' if k != '1' else ''} ({span_bytes[k] / 1e6:.0f} MB)"
        for k in spans
    )
    line = (
        f"chunks: {len(chunk_sizes)} in the safetensors files, median "
        f"{statistics.median(chunk_sizes) / 2**20:.2f} MiB; of the {total} tensors {parts}"
    )
    if wide_bytes:
        line += (
            f"; shard (0, 2) needs {100 * wide_needed / wide_bytes:.0f} % of the bytes of the "
            "tensors spanning >= 4 chunks (chunk bytes overlapping their kept rows, from the "
            "manifest)"
        )
    return Layout(line, wide, wide_bytes)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=3.0)
    args = parser.parse_args()
    for tool in ("nginx", "/usr/bin/time", "curl", "pgrep"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install nginx-light time curl procps", file=sys.stderr)
            return 2

    model, _tuned = generate(int(args.size_gib * (1 << 30)), args.shards)
    size = tree_size(model)
    files = sorted(p.relative_to(model) for p in model.rglob("*") if p.is_file())
    print(f"model: {model} ({size / 1e9:.2f} GB, {len(files)} files)", flush=True)
    no_runai = runai_available()
    work = Path(tempfile.mkdtemp(prefix="wreg-bench-loading-", dir=ROOT / ".cache"))
    rows: dict[str, Row] = {}
    servers: list[RunningServer] = []
    nginxes: list[subprocess.Popen[bytes]] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("WREG_")}
    base_env["XDG_CONFIG_HOME"] = str(work / "config")
    base_env["RUNAI_STREAMER_LOG_LEVEL"] = "WARNING"
    layout = Layout()

    def wreg_env(url: str, cache: Path) -> dict[str, str]:
        return base_env | {"WREG_URL": url, "WREG_CACHE": str(cache)}

    def setup(cmd: list[str], env: dict[str, str]) -> str:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - this venv's wreg, on the bench's generated model
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def worker(
        name: str,
        kind: str,
        *argv: str,
        python: str = PYTHON,
        before: tuple[float, int, float] | None = None,
    ) -> dict[str, Any]:
        """Run one row's worker; ``before``: the wall, peak KB and CPU seconds of the step
        it follows."""
        if before is None:
            time.sleep(args.idle)
        s = measured([python, WORKER, kind, *argv], base_env)
        got: dict[str, Any] = json.loads(s.stdout.strip().splitlines()[-1])
        row = rows.setdefault(name, Row(name))
        wall, process, cpu = got["wall"], s.wall, s.cpu
        if before is not None:
            wall += before[0]
            process += before[0]
            cpu += before[2]
            row.parts.append(before[0])
            row.other_kb.append(before[1])
        row.seconds.append(wall)
        row.process.append(process)
        row.cpu.append(cpu)
        if kind in ("stream", "runai"):
            row.first.append(got["first"])
        if "opened" in got:
            row.opened.append(got["opened"])
        row.peak_kb.append(got["peak_kb"])
        row.above_kb.append(got["peak_kb"] - got["baseline_kb"])
        row.bytes = got["bytes"]
        if "stats" in got:
            row.stats.append(got["stats"])
        print(
            f"  {name:<46} {wall:7.3f} s (process {process:6.3f} s, {cpu:5.2f} CPU-s)  peak "
            f"{got['peak_kb'] / 1024:5.0f} MB, {(got['peak_kb'] - got['baseline_kb']) / 1024:5.0f}"
            f" MB above base{'' if got['peak_reset'] else ' (VmHWM not reset)'}",
            flush=True,
        )
        return got

    try:
        site = work / "site"
        site.mkdir()
        os.symlink(model, site / "model")
        nginx, ng_url = start_nginx(site, work)
        nginxes.append(nginx)
        srv = start_server(work / "data")
        servers.append(srv)
        setup([WREG, "push", str(model), REF], wreg_env(srv.url, work / "push-cache"))
        out_dir = work / "out"
        curl = ["curl", "--parallel", "--parallel-max", "8", "-sS", "--fail", "--create-dirs"]
        for f in files:
            curl += ["-o", str(out_dir / f), f"{ng_url}/model/{f}"]
        cold = work / "cold-cache"
        warm = work / "warm-cache"

        def pull_load() -> None:
            clean(cold)
            time.sleep(args.idle)
            s = measured([WREG, "pull", REF, "--json"], wreg_env(srv.url, cold))
            path = json.loads(s.stdout)["path"]
            worker(PULL_LOAD, "files", path, before=(s.wall, s.rss_kb, s.cpu))

        def curl_load() -> None:
            clean(out_dir)
            time.sleep(args.idle)
            s = measured(curl)
            worker(CURL_LOAD, "files", str(out_dir), before=(s.wall, s.rss_kb, s.cpu))

        def stream(name: str, *extra: str) -> None:
            nonlocal layout
            clean(cold)
            got = worker(name, "stream", srv.url, REF, str(cold), *extra)
            if not layout.line and not extra:
                cache = NodeCache(cold)
                try:
                    manifest = cache.load_manifest(got["stats"]["manifest"])
                finally:
                    cache.close()
                assert manifest is not None, "the stream left no manifest in the cache"
                layout = chunk_layout(model, manifest)

        def warm_rows() -> None:
            clean(warm)
            got = json.loads(setup([WREG, "pull", REF, "--json"], wreg_env(srv.url, warm)))
            path = got["path"]
            worker(WARM_FILES, "files", path)
            if no_runai:
                rows.setdefault(WARM_RUNAI, Row(WARM_RUNAI, note=f"not run: {no_runai}"))
            else:
                worker(WARM_RUNAI, "runai", path, python=str(TORCH_PYTHON))
            worker(WARM_LOAD, "load", srv.url, REF, str(warm))

        for r in range(args.runs):
            print(f"round {r + 1} of {args.runs}", flush=True)
            pull_load()
            curl_load()
            stream(STREAM)
            stream(STREAM_DROP, "--drop")
            stream(SHARD, "--shard", "0,2")
            if layout.wide:
                stream(SHARD_WIDE, "--shard", "0,2", "--tensors", ",".join(layout.wide))
            warm_rows()
    finally:
        for s in servers:
            s.stop()
        for proc in nginxes:
            stop_process(proc, 10, signal.SIGQUIT)
        clean(work)

    tensor_bytes = rows[STREAM].stats[0]["bytes_tensors"]
    for name in (PULL_LOAD, CURL_LOAD, STREAM, STREAM_DROP, WARM_FILES, WARM_RUNAI, WARM_LOAD):
        if rows[name].seconds:
            assert rows[name].bytes == tensor_bytes, f"{name} read {rows[name].bytes} B"
    report = render(rows, size, len(files), layout, args.runs, args.idle, args.shards)
    print(report)
    if args.write:
        command = ".venv/bin/python bench/loading.py --write  # make bench runs it without --write"
        update_results("loading", report, command)
    return 0


def render(
    rows: dict[str, Row],
    size: int,
    nfiles: int,
    layout: Layout,
    runs: int,
    idle: float,
    shards: int,
) -> str:
    tensor_bytes = rows[STREAM].stats[0]["bytes_tensors"]
    gb = tensor_bytes / 1e9

    def mb(values: Sequence[int]) -> str:
        return f"{max(values) / 1024:.0f}" if values else "-"

    def per_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    lines = [
        f"Machine: {machine()}. Model: {size / 1e9:.2f} GB in {nfiles} files ({shards} fp32 "
        f"safetensors shards tiled from the real weights), {gb:.2f} GB of tensors. Median of "
        f"{runs} interleaved rounds (min-max in brackets), {idle:g} s idle before each row; "
        "all on 127.0.0.1, each row in its own process. Wall is to the full state dict with "
        "every byte read, from the end of the loader's imports (rows 1 and 2: plus the whole "
        "pull or curl command); process is the wall of the row's processes, start-up "
        "included; CPU is their user + system seconds (rows 1 and 2: both commands). Peak "
        "RSS is the loading process's VmHWM; above base subtracts its RSS after imports "
        "(for the wreg rows: wreg, its HTTP engine and codec, as safetensors for the others).",
        "",
        "| measurement | wall s | GB/s | first tensor s | process s | CPU s | peak RSS MB "
        "| above base MB | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows.values():
        if not row.seconds:
            lines.append(f"| {row.name} | - | - | - | - | - | - | - | {row.note} |")
            continue
        note = row.note
        if row.parts:
            what = "pull" if row.name == PULL_LOAD else "curl"
            note = (
                f"{what} {spread(row.parts)} s (peak {mb(row.other_kb)} MB) + load_file "
                f"{spread([a - b for a, b in zip(row.seconds, row.parts, strict=True)])} s"
            )
        if row.stats:
            st = row.stats[0]
            note = (
                f"fetched {st['bytes_fetched'] / 1e6:.0f} MB raw "
                f"({st['bytes_downloaded'] / 1e6:.0f} MB on the wire) in "
                f"{st['chunks_downloaded']} chunks, {st['tensors']} tensors; "
                f"Client + stream() {spread(row.opened)} s"
            )
        first = spread(row.first) if row.first else "-"
        rate = row.bytes / 1e9 / statistics.median(row.seconds)
        lines.append(
            f"| {row.name} | {spread(row.seconds)} | {rate:.2f} | {first} | "
            f"{spread(row.process)} | {spread(row.cpu, '.2f')} | {mb(row.peak_kb)} | "
            f"{mb(row.above_kb)} | {note} |"
        )

    def ratio(a: str, b: str, attr: str = "seconds") -> str:
        if not rows[a].seconds or not rows[b].seconds:
            return "not measured"
        return spread(per_round(getattr(rows[a], attr), getattr(rows[b], attr)), ".2f")

    stream = rows[STREAM]
    shard = rows[SHARD]
    fetched = [st["bytes_fetched"] for st in shard.stats]
    lines += [
        "",
        "Against the targets (ratios per round, median (min-max)):",
        "",
        f"- cold full state dict, stream / pull + load_file: {ratio(STREAM, PULL_LOAD)} "
        f"(target ≤ 0.80); / curl + load_file: {ratio(STREAM, CURL_LOAD)} (target ≤ 1.00); "
        f"by process wall: {ratio(STREAM, PULL_LOAD, 'process')} and "
        f"{ratio(STREAM, CURL_LOAD, 'process')}",
        f"- first tensor / full state dict (stream): "
        f"{spread([100 * f / s for f, s in zip(stream.first, stream.seconds, strict=True)], '.1f')}"
        " % (target ≤ 5 %)",
        f"- warm Client.load / load_file of the cached files: {ratio(WARM_LOAD, WARM_FILES)} "
        f"(target ≤ 1.00); / runai-model-streamer: "
        + (ratio(WARM_LOAD, WARM_RUNAI) if rows[WARM_RUNAI].seconds else rows[WARM_RUNAI].note)
        + " (target ≤ 1.00)",
        f"- stream one tensor at a time, peak RSS above base: "
        f"{mb(rows[STREAM_DROP].above_kb)} MB (target ≤ 300 MB; full state dict: "
        f"{mb(stream.above_kb)} MB)",
        f"- shard (0, 2): fetched {statistics.median(fetched) / 1e6:.0f} MB = "
        f"{100 * statistics.median(fetched) / tensor_bytes:.1f} % of the "
        f"{tensor_bytes / 1e6:.0f} MB of tensors (target ≤ 55 % for tensors spanning ≥ 4 "
        f"chunks); time / full cold stream {ratio(SHARD, STREAM)}",
    ]
    if rows.get(SHARD_WIDE) and layout.wide_bytes:
        wide = [st["bytes_fetched"] for st in rows[SHARD_WIDE].stats]
        lines.append(
            f"- shard (0, 2) of only the {len(layout.wide)} tensors spanning ≥ 4 chunks: "
            f"fetched {statistics.median(wide) / 1e6:.0f} MB = "
            f"{100 * statistics.median(wide) / layout.wide_bytes:.1f} % of their "
            f"{layout.wide_bytes / 1e6:.0f} MB (target ≤ 55 %)"
        )
    lines.append(f"- {layout.line}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
