"""Chunk sizes: chunk count vs dedupe vs chunking+hashing throughput, on a real model.

Cuts the real all-MiniLM-L6-v2 ``model.safetensors`` (90 MB fp32) and variants of it:

- format-aware (``wreg.core.chunking.plan_file``) for every CHUNK_MAX x CHUNK_PACK pair;
- FastCDC over the file as opaque bytes (``plan_cdc``, compiled pyfastcdc) for several
  average sizes, min = avg/4 and max = avg*4 as in ``wreg.core.sizes``.

Dedupe: every variant is cut the same way as the base; "new" is the sum of the sizes of
the variant's distinct chunks whose digest the base does not have (what a push of the
variant after the base uploads). The yardstick is ``changed``: the data bytes of the
variant's tensors that differ from the base's or are new (``changed_tensor_bytes``).
Variants: ``finetune`` (encoder layers 4-5 perturbed, 32 tensors), ``inserted`` (a 1 MiB
tensor placed near the start of the data, every later offset shifts) and, built here,
``vocab+8`` (8 rows appended to the 46.9 MB word-embedding matrix, as when tokens are
added to a tokenizer: changed = the whole tensor, ideal = 12 KiB).

Throughput: plan + blake3 (``wreg.core.digest.digest_bytes``) of every chunk of the base
file, file in the page cache, in MB per CPU-second of the process (per core; blake3 uses
threads for chunks of 8 MiB and more); median of ``--runs`` runs.

    .venv/bin/python bench/chunk_sizes.py [--runs 5] [--write]
"""

from __future__ import annotations

import mmap
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from results import bench_parser, machine, publish
from wreg.core.chunking import (
    ChunkParams,
    ChunkSpec,
    plan_cdc,
    plan_file,
    plan_safetensors,
    read_safetensors_layout,
)
from wreg.core.digest import digest_bytes
from wreg.core.manifest import ChunkRef, canonical_json
from wreg.core.sizes import CDC_AVG, CHUNK_MAX, CHUNK_PACK, MAX_MISSING_QUERY, KiB, MiB
from wreg.testing import realdata

CHUNK_MAXES = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB]
CHUNK_PACKS = [16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB]
CDC_AVGS = [64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB]
VARIANTS = ["finetune", "inserted", "vocab+8"]
# CPU seconds of this process (all its threads): a per-core figure that other load on a
# shared machine distorts far less than wall time does.
CLOCK = time.process_time

Planner = Callable[[Path], list[ChunkSpec]]


def size_label(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n / MiB:.2f} MiB" if n >= MiB else f"{n / KiB:.1f} KiB"


def mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def make_vocab_extended(base: Path, out: Path, rows: int = 8) -> None:
    """``base`` with ``rows`` rows appended to the word-embedding matrix."""
    tensors, metadata = realdata.read_safetensors(base)
    name = "embeddings.word_embeddings.weight"
    t = tensors[name]
    rng = np.random.default_rng(8)
    extra = (rng.standard_normal((rows, t.shape[1]), dtype=np.float32) * 0.02).astype("<f4")
    shape = (t.shape[0] + rows, t.shape[1])
    tensors[name] = realdata.Tensor(t.dtype, shape, t.data + extra.tobytes())
    realdata.write_safetensors(out, tensors, metadata)


class Files:
    """Memory-mapped files and a digest memo keyed by (file, offset, length)."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self._maps: dict[str, mmap.mmap] = {}
        self._memo: dict[tuple[str, int, int], str] = {}
        for name, path in paths.items():
            with open(path, "rb") as f:
                self._maps[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def view(self, name: str) -> memoryview:
        return memoryview(self._maps[name])

    def digests(self, name: str, specs: list[ChunkSpec]) -> dict[str, int]:
        """Distinct chunk digests of file ``name`` cut as ``specs`` -> chunk size."""
        view = self.view(name)
        out: dict[str, int] = {}
        for s in specs:
            key = (name, s.offset, s.length)
            digest = self._memo.get(key)
            if digest is None:
                digest = self._memo[key] = digest_bytes(view[s.offset : s.offset + s.length])
            out[digest] = s.length
        return out


def dedupe(files: Files, plan: Planner) -> tuple[list[ChunkSpec], dict[str, int]]:
    """(base chunks, variant -> bytes a push after the base would upload)."""
    base_specs = plan(files.paths["base"])
    assert sum(s.length for s in base_specs) == files.paths["base"].stat().st_size
    have = files.digests("base", base_specs)
    new: dict[str, int] = {}
    for v in VARIANTS:
        chunks = files.digests(v, plan(files.paths[v]))
        new[v] = sum(size for digest, size in chunks.items() if digest not in have)
    return base_specs, new


def throughput(files: Files, plan: Planner, runs: int) -> float:
    """Bytes per second of plan + hash of every chunk of the base file (median)."""
    path = files.paths["base"]
    view = files.view("base")
    times = []
    for _ in range(runs):
        start = CLOCK()
        for s in plan(path):
            digest_bytes(view[s.offset : s.offset + s.length])
        times.append(CLOCK() - start)
    return path.stat().st_size / statistics.median(times)


def read_head(path: Path) -> tuple[bytes, int]:
    """The 8-byte length plus the JSON header of a safetensors file, and the file size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        (n,) = struct.unpack("<Q", head)
        return head + f.read(min(n, size)), size


def tensor_planner(chunk_max: int, chunk_pack: int) -> Planner:
    """``plan_file``'s safetensors path, but reading only the header (see plan_file_cost)."""
    params = ChunkParams(chunk_max=chunk_max, chunk_pack=chunk_pack)

    def plan(path: Path) -> list[ChunkSpec]:
        head, size = read_head(path)
        layout = read_safetensors_layout(head, size)
        assert layout is not None, path
        specs = plan_safetensors(*layout, size, params)
        return specs

    return plan


def plan_file_cost(path: Path, runs: int) -> tuple[float, float]:
    """Median seconds of ``plan_file`` and of the header-only planner on ``path``."""
    ours = tensor_planner(CHUNK_MAX, CHUNK_PACK)
    assert ours(path) == plan_file(path)
    times: dict[str, list[float]] = {"plan_file": [], "header": []}
    for _ in range(runs):
        for name, fn in (("plan_file", plan_file), ("header", ours)):
            start = CLOCK()
            fn(path)
            times[name].append(CLOCK() - start)
    return statistics.median(times["plan_file"]), statistics.median(times["header"])


def cdc_planner(avg: int) -> Planner:
    params = ChunkParams(cdc_avg=avg, cdc_min=avg // 4, cdc_max=avg * 4)
    return lambda path: plan_cdc(path, path.stat().st_size, params)


@contextmanager
def model_files() -> Iterator[dict[str, Path]]:
    w = realdata.WEIGHTS_FILE
    paths = {name: realdata.variant(name) / w for name in ("base", "finetune", "inserted")}
    with tempfile.TemporaryDirectory(prefix="wreg-bench-") as tmp:
        paths["vocab+8"] = Path(tmp) / "vocab.safetensors"
        make_vocab_extended(paths["base"], paths["vocab+8"])
        yield paths


def run(runs: int) -> str:
    t0 = time.perf_counter()
    lines: list[str] = []
    with model_files() as paths:
        files = Files(paths)
        base = paths["base"]
        changed = {v: realdata.changed_tensor_bytes(base, paths[v]) for v in VARIANTS}
        size = base.stat().st_size
        lines += [
            f"Base file {mb(size)} MB ({len(realdata.read_header(base).tensors)} tensors). "
            "Bytes a push of each variant uploads after the base, MB "
            "(changed tensor bytes in the header row); MB/s = plan + blake3 of the base file "
            f"per CPU-second, median of {runs} runs. Machine: {machine()}.",
            "",
            "Format-aware (safetensors header parsed, tensors cut from their own start):",
            "",
            "| CHUNK_MAX | CHUNK_PACK | chunks | mean chunk | "
            + " | ".join(f"{v} new (changed {mb(changed[v])})" for v in VARIANTS)
            + " | MB/s |",
            "|---|---|---|---|" + "---|" * len(VARIANTS) + "---|",
        ]
        for chunk_max in CHUNK_MAXES:
            for chunk_pack in CHUNK_PACKS:
                plan = tensor_planner(chunk_max, chunk_pack)
                specs, new = dedupe(files, plan)
                assert specs == plan_file(base, ChunkParams(chunk_max, chunk_pack))
                speed = throughput(files, plan, runs)
                current = chunk_max == CHUNK_MAX and chunk_pack == CHUNK_PACK
                lines.append(
                    f"| {size_label(chunk_max)}{' (current)' if current else ''} "
                    f"| {size_label(chunk_pack)} | {len(specs)} "
                    f"| {size_label(size // len(specs))} | "
                    + " | ".join(mb(new[v]) for v in VARIANTS)
                    + f" | {speed / 1e6:.0f} |"
                )
        lines += [
            "",
            "FastCDC over the file as opaque bytes (min = avg/4, max = avg*4):",
            "",
            "| CDC avg | chunks | mean chunk | "
            + " | ".join(f"{v} new" for v in VARIANTS)
            + " | MB/s |",
            "|---|---|---|" + "---|" * len(VARIANTS) + "---|",
        ]
        for avg in CDC_AVGS:
            plan = cdc_planner(avg)
            specs, new = dedupe(files, plan)
            speed = throughput(files, plan, runs)
            mark = " (current)" if avg == CDC_AVG else ""
            lines.append(
                f"| {size_label(avg)}{mark} | {len(specs)} | {size_label(size // len(specs))} | "
                + " | ".join(mb(new[v]) for v in VARIANTS)
                + f" | {speed / 1e6:.0f} |"
            )
        slow, fast = plan_file_cost(base, runs)
    per_chunk = len(canonical_json(ChunkRef("blake3:" + "0" * 64, CHUNK_MAX).to_json())) + 1
    lines += [
        "",
        f"`plan_file` as shipped: {slow * 1e3:.1f} ms per call on this file, against "
        f"{fast * 1e3:.2f} ms when only the header is read (the format-aware rows above "
        "use the latter, via `read_safetensors_layout` + `plan_safetensors`).",
        "",
        "What the count means at scale (140 GB of weights in tensors much larger than "
        f"CHUNK_MAX; {per_chunk} manifest bytes per chunk; "
        f"{MAX_MISSING_QUERY} digests per .../chunks/missing query):",
        "",
        "| CHUNK_MAX | chunks | manifest | missing queries |",
        "|---|---|---|---|",
    ]
    for chunk_max in CHUNK_MAXES:
        count = -(-140 * 10**9 // chunk_max)
        lines.append(
            f"| {size_label(chunk_max)} | {count} | {count * per_chunk / 1e6:.1f} MB "
            f"| {-(-count // MAX_MISSING_QUERY)} |"
        )
    lines += ["", f"(bench wall time {time.perf_counter() - t0:.0f} s)"]
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5, help="timing runs per figure")
    args = parser.parse_args()
    return publish("chunk_sizes", run(args.runs), write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
