"""Stored chunk encoding: compression ratio and per-core speed on real fp32 and bf16 weights.

Chunks are cut by ``wreg.core.chunking`` (current constants unless ``--chunk-max`` says
otherwise) from the real all-MiniLM-L6-v2 ``model.safetensors`` (fp32) and its bf16
copy. Each is encoded with:

- ``wreg``: ``wreg.core.encoding.encode_chunk(raw, dtype)`` (byte planes, exponent plane
  zstd, mantissa planes raw when they do not compress);
- ``zstd-1`` / ``zstd-3``: plain zstd of the whole chunk at that level (the baseline).

ratio = stored bytes / raw bytes (wreg's 16-byte chunk headers included). Speeds are MB
of raw bytes per CPU-second, one thread (= per core; ``time.process_time``, so other load
on the machine distorts it less than wall time), median of ``--runs`` runs, file in
memory. decode = ``decode_chunk`` (a fresh output buffer per chunk, all kept, like the
``zstd.decompress`` baseline); into = ``decode_chunk_into`` a reused buffer; decode+verify
= ``decode_chunk`` with the expected digest (what the server does with an upload); into
+verify = ``decode_chunk_into`` a reused buffer with the digest (what a pull does).

The breakdown splits into+verify: ``inflate`` is zstd decoding of the planes (and whole
chunks) stored zstd, into a reused buffer as the decoder does; ``join`` is the rest of
``decode_chunk_into`` (interleaving planes, parsing); ``blake3`` is ``digest_bytes`` of the
raw chunks alone; ``fresh memory`` is ``bytearray(raw length)`` per chunk, all kept — the
cost that ``decode_chunk`` pays on top of ``decode_chunk_into``.

    .venv/bin/python bench/codec.py [--runs 7] [--write]
"""

from __future__ import annotations

import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from chunk_sizes import CLOCK, size_label
from results import bench_parser, machine, publish
from wreg.core.chunking import ChunkParams, plan_file
from wreg.core.digest import digest_bytes
from wreg.core.encoding import (
    HEADER_SIZE,
    Codec,
    Transform,
    decode_chunk,
    decode_chunk_into,
    encode_chunk,
    parse_header,
)
from wreg.core.sizes import CHUNK_MAX, MiB
from wreg.testing import realdata

SWEEP_CHUNK_MAX = [1 * MiB, 4 * MiB, 16 * MiB]


@dataclass
class Chunks:
    label: str
    raw: list[memoryview]
    dtypes: list[str | None]
    digests: list[str]

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.raw)


def load(path: Path, label: str, chunk_max: int) -> Chunks:
    data = path.read_bytes()
    view = memoryview(data)
    specs = plan_file(path, ChunkParams(chunk_max=chunk_max))
    raw = [view[s.offset : s.offset + s.length] for s in specs]
    return Chunks(label, raw, [s.dtype for s in specs], [digest_bytes(r) for r in raw])


def median_times(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin so machine drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@dataclass
class Row:
    method: str
    ratio: float
    encode: float
    decode: float
    into: float | None = None
    verify: float | None = None
    into_verify: float | None = None
    breakdown: dict[str, float] | None = None


_PLANE = struct.Struct("<BI")  # the plane table entry (kind, stored length)


def zstd_frames(blob: bytes) -> list[tuple[memoryview, int]]:
    """The zstd frames in an encoded chunk, each with the bytes it decodes to."""
    codec, transform, raw_len = parse_header(blob)
    view = memoryview(blob)[HEADER_SIZE:]
    if transform is Transform.NONE:
        return [(view, raw_len)] if codec is Codec.ZSTD else []
    width = 2 if transform.name.startswith("BYTEGROUP2") else 4
    frames, pos = [], width * _PLANE.size
    for i in range(width):
        kind, stored = _PLANE.unpack_from(view, i * _PLANE.size)
        if kind == Codec.ZSTD:
            frames.append((view[pos : pos + stored], raw_len // width))
        pos += stored
    return frames


def bench_wreg(chunks: Chunks, runs: int) -> Row:
    pairs = list(zip(chunks.raw, chunks.dtypes, strict=True))
    blobs = [encode_chunk(raw, dtype) for raw, dtype in pairs]
    for blob, raw, digest in zip(blobs, chunks.raw, chunks.digests, strict=True):
        assert decode_chunk(blob, digest) == raw
    out = memoryview(bytearray(max(len(r) for r in chunks.raw)))
    checked = list(zip(blobs, chunks.digests, strict=True))
    frames = [f for b in blobs for f in zstd_frames(b)]
    decompressor = zstandard.ZstdDecompressor()

    def inflate() -> None:
        for frame, n in frames:
            with decompressor.stream_reader(frame) as reader:
                reader.readinto(out[:n])

    size = chunks.size
    t = median_times(
        {
            "encode": lambda: [encode_chunk(r, d) for r, d in pairs],
            "decode": lambda: [decode_chunk(b) for b in blobs],
            "into": lambda: [decode_chunk_into(b, out) for b in blobs],
            "verify": lambda: [decode_chunk(b, d) for b, d in checked],
            "into_verify": lambda: [decode_chunk_into(b, out, d) for b, d in checked],
            "inflate": inflate,
            "blake3": lambda: [digest_bytes(r) for r in chunks.raw],
            "fresh": lambda: [bytearray(len(r)) for r in chunks.raw],
        },
        runs,
    )
    breakdown = {
        "inflate": size / t["inflate"],
        "inflated MB": sum(n for _, n in frames) / 1e6,
        "join": size / (t["into"] - t["inflate"]),
        "blake3": size / t["blake3"],
        "fresh": size / t["fresh"],
    }
    return Row(
        "wreg",
        sum(len(b) for b in blobs) / size,
        size / t["encode"],
        size / t["decode"],
        size / t["into"],
        size / t["verify"],
        size / t["into_verify"],
        breakdown,
    )


def bench_zstd(chunks: Chunks, level: int, runs: int) -> Row:
    compressor = zstandard.ZstdCompressor(level=level)
    decompressor = zstandard.ZstdDecompressor()
    blobs = [compressor.compress(raw) for raw in chunks.raw]
    for blob, raw in zip(blobs, chunks.raw, strict=True):
        assert decompressor.decompress(blob) == raw
    size = chunks.size
    t = median_times(
        {
            "encode": lambda: [compressor.compress(r) for r in chunks.raw],
            "decode": lambda: [decompressor.decompress(b) for b in blobs],
        },
        runs,
    )
    return Row(
        f"zstd-{level}", sum(len(b) for b in blobs) / size, size / t["encode"], size / t["decode"]
    )


def fmt(speed: float | None) -> str:
    return "" if speed is None else f"{speed / 1e6:.0f}"


def run(runs: int) -> str:
    t0 = time.perf_counter()
    paths = {
        "fp32": realdata.variant("base") / realdata.WEIGHTS_FILE,
        "bf16": realdata.variant("bf16") / realdata.WEIGHTS_FILE,
    }
    lines = [
        f"Real all-MiniLM-L6-v2 weights, chunks from `plan_file` (CHUNK_MAX "
        f"{size_label(CHUNK_MAX)}); one thread; MB of raw bytes per CPU-second, "
        f"median of {runs} runs. "
        f"zstandard {zstandard.__version__} (zstd {zstandard.ZSTD_VERSION}). "
        f"Machine: {machine()}.",
        "",
        "| weights | method | stored/raw | encode MB/s | decode MB/s | decode into MB/s "
        "| decode+verify MB/s | into+verify MB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    breakdowns = []
    for label, path in paths.items():
        chunks = load(path, label, CHUNK_MAX)
        rows = [bench_wreg(chunks, runs), bench_zstd(chunks, 1, runs), bench_zstd(chunks, 3, runs)]
        for row in rows:
            lines.append(
                f"| {label} ({chunks.size / 1e6:.1f} MB, {len(chunks.raw)} chunks) "
                f"| {row.method} | {row.ratio:.3f} | {fmt(row.encode)} | {fmt(row.decode)} "
                f"| {fmt(row.into)} | {fmt(row.verify)} | {fmt(row.into_verify)} |"
            )
        if rows[0].breakdown:
            breakdowns.append((label, rows[0].breakdown))
    lines += [
        "",
        "Where wreg's into+verify time goes (MB of raw chunk bytes per CPU-second of each "
        "step alone; the steps' inverse rates add up):",
        "",
        "| weights | inflate (zstd planes) | MB inflated | join and the rest | blake3 "
        "| fresh memory (decode only) |",
        "|---|---|---|---|---|---|",
    ]
    for label, b in breakdowns:
        lines.append(
            f"| {label} | {fmt(b['inflate'])} | {b['inflated MB']:.1f} | {fmt(b['join'])} "
            f"| {fmt(b['blake3'])} | {fmt(b['fresh'])} |"
        )
    lines += [
        "",
        "wreg encoding by CHUNK_MAX (same files):",
        "",
        "| weights | CHUNK_MAX | chunks | stored/raw | encode MB/s | decode MB/s "
        "| decode into MB/s | decode+verify MB/s | into+verify MB/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, path in paths.items():
        for chunk_max in SWEEP_CHUNK_MAX:
            chunks = load(path, label, chunk_max)
            row = bench_wreg(chunks, runs)
            lines.append(
                f"| {label} | {size_label(chunk_max)} | {len(chunks.raw)} | {row.ratio:.3f} "
                f"| {fmt(row.encode)} | {fmt(row.decode)} | {fmt(row.into)} "
                f"| {fmt(row.verify)} | {fmt(row.into_verify)} |"
            )
    lines += ["", f"(bench wall time {time.perf_counter() - t0:.0f} s)"]
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=7, help="timing runs per figure (>= 5)")
    args = parser.parse_args()
    return publish("codec", run(args.runs), write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
