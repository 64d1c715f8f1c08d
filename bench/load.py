"""Bounded load test: N concurrent clients push and pull distinct small models.

Starts a real ``wreg-server serve`` on 127.0.0.1 (embedded default: SQLite index, file
store, in a temp dir), then runs ``--clients`` asyncio clients (aiohttp, one connection
pool each) for ``--duration`` seconds. Each client repeats one cycle:

    push:  encode K fresh chunks -> POST .../chunks/missing -> PUT each missing chunk
           -> PUT manifest ?tag=v<i>
    pull:  GET manifest by tag -> POST .../chunks/missing (must be empty) -> GET each
           chunk -> decode and verify its digest

Every unexpected status, failed verification or exception is an error; the run must end
with 0. The server's RSS (``VmRSS`` from ``/proc/<pid>/status``) is sampled every
``--sample`` seconds; the baseline is the sample taken at the end of ``--warmup`` (load
already running, so allocator and connection pools are warm), and growth after it is
what "flat" is judged on. Loopback only; the run stops by itself (a cycle in flight at
the deadline finishes, bounded by a hard timeout) and the server is always stopped.

    .venv/bin/python bench/load.py [--duration 30] [--clients 8] [--json out.json] [--write]

Exit status 1 when any request failed or RSS grew more than ``--max-rss-growth-mib``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from results import bench_parser, machine, this_command, update_results
from wreg.core.digest import digest_bytes
from wreg.core.encoding import decode_chunk, encode_chunk
from wreg.core.manifest import ChunkRef, FileEntry, Manifest
from wreg.testing.servers import start_server

KiB = 1024
MiB = 1024 * KiB


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Stats:
    measuring: bool = False  # False during warmup: nothing is recorded
    cycles: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def time(self, op: str, seconds: float) -> None:
        if self.measuring:
            self.latency.setdefault(op, []).append(seconds)

    def error(self, message: str) -> None:
        self.errors.append(message)  # errors count during warmup too


class Timed:
    """``async with Timed(stats, op):`` records the block's wall time under ``op``."""

    def __init__(self, stats: Stats, op: str) -> None:
        self.stats, self.op = stats, op

    async def __aenter__(self) -> None:
        self.t0 = time.perf_counter()

    async def __aexit__(self, *exc: object) -> None:
        self.stats.time(self.op, time.perf_counter() - self.t0)


def synthetic_chunks(client: int, cycle: int, count: int, size: int) -> list[bytes]:
    """``count`` distinct chunks: half random, half compressible, unique per (client, cycle)."""
    tag = f"{client}:{cycle}:".encode()
    chunks = []
    for i in range(count):
        head = tag + str(i).encode() + b":"
        if i % 2:  # random, but the same bytes each time this (client, cycle) comes round
            body = random.Random(head).randbytes(size - len(head))  # noqa: S311 - deterministic chunk bytes per (client, cycle), not cryptography
        else:
            body = (head * (size // len(head) + 1))[: size - len(head)]
        chunks.append(head + body)
    return chunks


async def expect(response: aiohttp.ClientResponse, *statuses: int) -> bytes:
    body = await response.read()
    if response.status not in statuses:
        raise RuntimeError(
            f"{response.method} {response.url.path}: {response.status} {body[:200]!r}"
        )
    return body


async def cycle(
    session: aiohttp.ClientSession, stats: Stats, client: int, n: int, args: argparse.Namespace
) -> None:
    repeat = args.models > 0 and n >= args.models  # this model was pushed before
    if args.models > 0:
        n %= args.models
    raw = synthetic_chunks(client, n, args.chunks, args.chunk_kib * KiB)
    digests = [digest_bytes(r) for r in raw]
    encoded = {d: encode_chunk(r) for d, r in zip(digests, raw, strict=True)}
    name = f"load/client-{client}"
    chunks = f"/v1/repositories/{name}/chunks"
    tag = f"v{n}"

    # push
    async with Timed(stats, "missing (push)"):
        resp = await session.post(f"{chunks}/missing", json={"digests": digests})
        missing = json.loads(await expect(resp, 200))["missing"]
    if missing != ([] if repeat else digests):
        raise RuntimeError(f"wrong missing list on {'re-push' if repeat else 'fresh push'}")
    for digest in missing:
        async with Timed(stats, "chunk PUT"):
            resp = await session.put(f"{chunks}/{digest}", data=encoded[digest])
            await expect(resp, 201)
        if stats.measuring:
            stats.bytes_up += len(encoded[digest])
    half = len(raw) // 2
    refs = [ChunkRef(d, len(r)) for d, r in zip(digests, raw, strict=True)]
    files = [
        FileEntry.of(path, part)
        for path, part in (("a.bin", tuple(refs[:half])), ("dir/b.bin", tuple(refs[half:])))
    ]
    manifest = Manifest.build(files, {"client": client, "cycle": n})
    body = manifest.to_json_bytes()
    async with Timed(stats, "manifest PUT"):
        resp = await session.put(
            f"/v1/repositories/{name}/manifests/{manifest.digest}", data=body, params={"tag": tag}
        )
        await expect(resp, 200 if repeat else 201)

    # pull
    async with Timed(stats, "manifest GET"):
        resp = await session.get(f"/v1/repositories/{name}/manifests/{tag}")
        fetched = await expect(resp, 200)
    if digest_bytes(fetched) != manifest.digest:
        raise RuntimeError(f"{name}@{tag}: manifest bytes do not match {manifest.digest}")
    wanted = [c.digest for f in Manifest.from_json_bytes(fetched).files for c in f.chunks]
    async with Timed(stats, "missing (pull)"):
        resp = await session.post(f"{chunks}/missing", json={"digests": wanted})
        still = json.loads(await expect(resp, 200))["missing"]
    if still:
        raise RuntimeError(f"{name}@{tag}: committed chunks reported missing: {still}")
    for digest, original in zip(wanted, raw, strict=True):
        async with Timed(stats, "chunk GET"):
            resp = await session.get(f"{chunks}/{digest}")
            blob = await expect(resp, 200)
        if bytes(decode_chunk(blob, expected_digest=digest)) != original:
            raise RuntimeError(f"chunk {digest} decoded to other bytes")
        if stats.measuring:
            stats.bytes_down += len(blob)
    if stats.measuring:
        stats.cycles += 1


async def client_loop(
    base_url: str, stats: Stats, client: int, deadline: float, args: argparse.Namespace
) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=connector) as session:
        n = 0
        while time.monotonic() < deadline:
            try:
                await cycle(session, stats, client, n, args)
            except Exception as exc:
                stats.error(f"client {client} cycle {n}: {type(exc).__name__}: {exc}")
            n += 1


async def sample_rss(pid: int, every: float, samples: list[tuple[float, int]], t0: float) -> None:
    while True:
        kib = rss_kib(pid)
        if kib is not None:
            samples.append((time.monotonic() - t0, kib))
        await asyncio.sleep(every)


async def run_load(base_url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    sampler = asyncio.create_task(sample_rss(pid, args.sample, samples, t0))
    deadline = t0 + args.warmup + args.duration
    clients = [
        asyncio.create_task(client_loop(base_url, stats, i, deadline, args))
        for i in range(args.clients)
    ]
    await asyncio.sleep(args.warmup)
    baseline = rss_kib(pid) or 0
    stats.measuring = True
    measured_from = time.monotonic()
    try:
        # A cycle in flight at the deadline finishes; a stuck one cannot hold the run.
        await asyncio.wait_for(asyncio.gather(*clients), timeout=args.duration + args.warmup + 60)
    except TimeoutError:
        stats.error("clients did not finish within 60 s of the deadline")
        for task in clients:
            task.cancel()
    elapsed = time.monotonic() - measured_from
    stats.measuring = False
    sampler.cancel()
    final = rss_kib(pid) or 0
    after = [kib for t, kib in samples if t >= args.warmup] or [baseline]
    ops = {
        op: {
            "count": len(v),
            "per_s": len(v) / elapsed,
            "p50_ms": percentile(v, 50) * 1000,
            "p99_ms": percentile(v, 99) * 1000,
        }
        for op, v in sorted(stats.latency.items())
    }
    return {
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "warmup_s": args.warmup,
        "models": args.models,
        "chunks_per_cycle": args.chunks,
        "chunk_kib": args.chunk_kib,
        "cycles": stats.cycles,
        "requests": sum(len(v) for v in stats.latency.values()),
        "requests_per_s": sum(len(v) for v in stats.latency.values()) / elapsed,
        "mb_up_per_s": stats.bytes_up / elapsed / 1e6,
        "mb_down_per_s": stats.bytes_down / elapsed / 1e6,
        "errors": len(stats.errors),
        "error_samples": stats.errors[:10],
        "ops": ops,
        "rss_mib": {
            "start": round(samples[0][1] / KiB, 1) if samples else None,
            "baseline": round(baseline / KiB, 1),
            "last": round(final / KiB, 1),
            "max": round(max(after) / KiB, 1),
            "growth": round((max(after) - baseline) / KiB, 1),
            "series": [(round(t, 1), round(kib / KiB, 1)) for t, kib in samples],
        },
    }


def render(result: dict[str, Any], command: str) -> str:
    rss = result["rss_mib"]
    models = result["models"]
    which = (
        f"one of {models} models per client (pushed once, then re-pushed: nothing sent)"
        if models
        else "a fresh model"
    )
    lines = [
        f"{result['clients']} clients, {result['duration_s']} s measured after "
        f"{result['warmup_s']} s warmup; each cycle pushes {which} of "
        f"{result['chunks_per_cycle']} x {result['chunk_kib']} KiB chunks (half random, half "
        "compressible) and pulls it back verified. Server: `wreg-server serve`, SQLite + file "
        "store (fsync on), same machine.",
        "",
        f"- cycles: {result['cycles']}, requests: {result['requests']} "
        f"({result['requests_per_s']:.0f}/s), up {result['mb_up_per_s']:.1f} MB/s, "
        f"down {result['mb_down_per_s']:.1f} MB/s",
        f"- errors: **{result['errors']}**",
        f"- server RSS (MiB): start {rss['start']}, after warmup {rss['baseline']}, "
        f"last {rss['last']}, max {rss['max']} (growth after warmup {rss['growth']})",
        "",
        "| operation | count | per s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for op, o in result["ops"].items():
        lines.append(
            f"| {op} | {o['count']} | {o['per_s']:.0f} | {o['p50_ms']:.1f} | {o['p99_ms']:.1f} |"
        )
    series = rss["series"]
    step = max(1, len(series) // 12)
    points = ", ".join(f"{t:.1f}s {m:.0f}" for t, m in series[::step])
    lines += ["", f"RSS over time (s MiB): {points}"]
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per pushed model")
    parser.add_argument("--chunk-kib", type=int, default=64, help="raw size of each chunk")
    parser.add_argument(
        "--models",
        type=int,
        default=0,
        help="models per client, cycled (re-pushes send nothing); 0: a fresh one every cycle",
    )
    parser.add_argument("--sample", type=float, default=0.5, help="RSS sampling interval")
    parser.add_argument(
        "--max-rss-growth-mib", type=float, default=64, help="fail above this RSS growth"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()

    command = this_command()
    with tempfile.TemporaryDirectory(prefix="wreg-load-") as tmp:
        log = Path(tmp) / "server.log"
        server = start_server(Path(tmp) / "data", args=["--log-level", "warning"], log=log)
        try:
            result = asyncio.run(run_load(server.url, server.process.pid, args))
        finally:
            server.stop()
        result["server_log_tail"] = log.read_text(errors="replace")[-2000:]
    body = render(result, command)
    print(body)
    for sample in result["error_samples"]:
        print("error:", sample, file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.write:
        update_results("load", f"Machine: {machine()}.\n\n{body}", command)
    failed = result["errors"] > 0 or result["rss_mib"]["growth"] > args.max_rss_growth_mib
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
