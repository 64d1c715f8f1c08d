"""GPU check of the loader: push a real model to a local wreg-server, load it onto a CUDA
device through the pinned staging ring, check every tensor against safetensors.

One command on a machine with a CUDA GPU and torch (``make install`` then
``pip install torch``)::

    .venv/bin/python bench/gpu_load_check.py [--device cuda:0] [--copies 4] [--dtype bfloat16]

``--copies`` tiles the real MiniLM weights into that many shards (90.9 MB each). Reports
the cold load (empty node cache: registry → pinned buffers → device) and the warm one
(node cache → device): seconds, GB/s, peak host RSS above the interpreter's, and that
every tensor equals ``safetensors.torch.load_file`` of the pushed files (after the same
``--dtype`` conversion). ``--device cpu`` runs the same code without a GPU (staging
through ordinary buffers): what ``make test``'s torch suite checks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(copies: int, out: Path) -> Path:
    from wreg.testing import realdata

    base = realdata.base_model()
    tensors, metadata = realdata.read_safetensors(base / realdata.WEIGHTS_FILE)
    out.mkdir(parents=True)
    for i in range(copies):
        renamed = {f"shard{i}.{name}": (t.dtype, t.shape, t.data) for name, t in tensors.items()}
        realdata.write_safetensors(out / f"model-{i:05d}.safetensors", renamed, metadata)
    shutil.copy(base / "config.json", out / "config.json")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--dtype", default=None, help="convert on the device, e.g. bfloat16")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file

    import wreg
    from wreg.testing.servers import start_server

    dtype = getattr(torch, args.dtype) if args.dtype else None
    work = Path(tempfile.mkdtemp(prefix="wreg-gpu-check-"))
    server = start_server(work / "data")
    try:
        model = build(args.copies, work / "model")
        wreg.Client(server.url, cache_dir=work / "push-cache").push(model, "gpu/check@v1")
        expected: dict[str, Any] = {}
        for f in sorted(model.glob("*.safetensors")):
            expected.update(load_file(str(f)))
        total = sum(t.numel() * t.element_size() for t in expected.values())
        gigabytes = total / 1e9
        ok = True
        client = wreg.Client(server.url, cache_dir=work / "cache")
        for phase in ("cold", "warm"):
            base = rss_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            start = time.perf_counter()
            first = None
            loaded = {}
            for name, tensor in client.stream(
                "gpu/check@v1", framework="torch", device=args.device, dtype=dtype
            ):
                if first is None:
                    first = time.perf_counter() - start
                loaded[name] = tensor
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            peak = rss_mb("VmHWM") - base
            bad = []
            for name, ref in expected.items():
                want = ref if dtype is None else ref.to(dtype)
                got = loaded.get(name)
                if got is None or got.dtype != want.dtype or not torch.equal(got.cpu(), want):
                    bad.append(name)
            ok = ok and not bad and len(loaded) == len(expected)
            verdict = "all match" if not bad else f"MISMATCH: {bad[:5]}"
            print(
                f"{phase}: {len(loaded)} tensors, {gigabytes:.2f} GB in {seconds:.2f} s "
                f"({gigabytes / seconds:.2f} GB/s), first tensor {first or 0:.3f} s, "
                f"peak host RSS +{peak:.0f} MB, {verdict}"
            )
            del loaded
        return 0 if ok else 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
