"""One row of ``bench/loading.py``, in its own process (so its peak RSS is its own).

    python bench/loading_worker.py files DIR                    # safetensors.numpy.load_file
    python bench/loading_worker.py runai DIR                    # runai-model-streamer (torch)
    python bench/loading_worker.py stream URL REF CACHE [--drop] [--shard R,W] [--tensors P,..]
    python bench/loading_worker.py load URL REF CACHE           # wreg.Client.load

Imports what the row needs first, then records the baseline (``VmRSS``) and restarts the
peak count (``VmHWM``, through ``/proc/self/clear_refs``), then starts the clock. Every
byte of every tensor is read (``touch``) before it stops. Prints one JSON object: wall and
first-tensor seconds, tensors, bytes touched, baseline and peak RSS (KB), and for the wreg
rows the load's ``LoadStats``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def touch(array: np.ndarray[Any, Any]) -> int:
    """Read every byte of ``array`` (an XOR over it); returns how many there were."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    whole = flat.size // 8 * 8
    acc = 0
    if whole:
        acc ^= int(np.bitwise_xor.reduce(flat[:whole].view(np.uint64)))
    if whole < flat.size:
        acc ^= int(np.bitwise_xor.reduce(flat[whole:]))
    del acc  # only the reading counts
    return int(flat.size)


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def shards(directory: str) -> list[Path]:
    return sorted(Path(directory).rglob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["files", "runai", "stream", "load"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--drop", action="store_true", help="stream: keep no tensor")
    parser.add_argument("--shard", default="", help="stream: RANK,WORLD")
    parser.add_argument("--tensors", default="", help="stream: comma-separated patterns")
    args = parser.parse_args()

    # -- imports (part of the baseline) -----------------------------------------------
    if args.kind == "files":
        st_numpy = importlib.import_module("safetensors.numpy")
    elif args.kind == "runai":
        torch = importlib.import_module("torch")
        runai = importlib.import_module("runai_model_streamer")
        torch.set_num_threads(1)
    else:
        # The library the row uses, as safetensors.numpy for the files row: what the call
        # would otherwise import on first use (the HTTP engine, the codec).
        wreg = importlib.import_module("wreg")
        for module in ("wreg._load", "wreg._load.materialize", "wreg._http", "wreg.core.encoding"):
            importlib.import_module(module)

    baseline = status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (root or own process)
        reset = True
    except OSError:
        reset = False

    out: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    touched = 0
    first = 0.0
    start = time.perf_counter()
    if args.kind == "files":
        for path in shards(args.args[0]):
            loaded = st_numpy.load_file(str(path))
            for name, array in loaded.items():
                touched += touch(array)
                kept[name] = array
        first = time.perf_counter() - start
    elif args.kind == "runai":
        paths = [str(p) for p in shards(args.args[0])]
        with runai.SafetensorsStreamer() as streamer:
            streamer.stream_files(paths)
            for name, tensor in streamer.get_tensors():
                if not first:
                    first = time.perf_counter() - start
                touched += touch(tensor.reshape(-1).view(torch.uint8).numpy())
                kept[name] = tensor
    elif args.kind == "stream":
        url, ref, cache = args.args
        options: dict[str, Any] = {}
        if args.shard:
            rank, world = (int(v) for v in args.shard.split(","))
            options["shard"] = (rank, world)
        if args.tensors:
            options["tensors"] = args.tensors.split(",")
        client = wreg.Client(url, cache_dir=cache)
        with client.stream(ref, **options) as stream:
            out["opened"] = time.perf_counter() - start  # Client and stream() returned
            for name, array in stream:
                if not first:
                    first = time.perf_counter() - start
                touched += touch(array)
                if not args.drop:
                    kept[name] = array
                del array
        out["stats"] = stream.stats.to_json()
    else:
        url, ref, cache = args.args
        client = wreg.Client(url, cache_dir=cache)
        kept = client.load(ref)
        first = time.perf_counter() - start  # the dict comes whole
        for array in kept.values():
            touched += touch(array)
    wall = time.perf_counter() - start
    out |= {
        "wall": wall,
        "first": first,
        "tensors": len(kept) if kept else out.get("stats", {}).get("tensors", 0),
        "bytes": touched,
        "baseline_kb": baseline,
        "peak_kb": status_kb("VmHWM"),
        "peak_reset": reset,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
