"""Client memory as the model grows: peak RSS of ``wreg push`` and ``wreg pull`` for a
1 GiB and a 4 GiB model (issue target: ≤ 300 MB and flat).

Uses the transfer bench's generated models (real weights, tiled; 256 MiB shards), a
fresh ``wreg-server`` on the embedded default per size, an empty node cache per pull,
and ``/usr/bin/time -v`` for the peak RSS.

    .venv/bin/python bench/memory_scaling.py [--sizes 1 4] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chunk_sizes import machine, update_results
from transfer import ROOT, WREG, generate, start_server, timed, tree_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4], help="GiB")
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args()
    if shutil.which("/usr/bin/time") is None:
        print("missing /usr/bin/time: apt-get install time", file=sys.stderr)
        return 2
    rows = []
    for gib in args.sizes:
        model, _ = generate(gib << 30, 4 * gib)
        work = Path(tempfile.mkdtemp(prefix="wreg-mem-", dir=ROOT / ".cache"))
        server = start_server(work / "data")
        try:
            env = dict(os.environ) | {
                "WREG_URL": server.url,
                "WREG_CACHE": str(work / "push-cache"),
            }
            push_s, push_kb, _ = timed([WREG, "push", str(model), "bench/mem@v1", "--json"], env)
            time.sleep(3)
            env = dict(os.environ) | {
                "WREG_URL": server.url,
                "WREG_CACHE": str(work / "pull-cache"),
            }
            pull_s, pull_kb, _ = timed(
                [WREG, "pull", "bench/mem@v1", "-o", str(work / "out"), "--json"], env
            )
            size = tree_size(model)
        finally:
            server.stop()
            shutil.rmtree(work, ignore_errors=True)
        rows.append((size, push_s, push_kb, pull_s, pull_kb))
        print(
            f"{size / 1e9:.2f} GB: push {push_s:.1f} s {push_kb / 1024:.0f} MB, "
            f"pull {pull_s:.1f} s {pull_kb / 1024:.0f} MB",
            flush=True,
        )
    table = [
        f"Machine: {machine()}. One run per size (peak RSS is not a timing).",
        "",
        "| model | push s | push peak RSS MB | pull s | pull peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {s / 1e9:.2f} GB | {ps:.1f} | {pk / 1024:.0f} | {ls:.1f} | {lk / 1024:.0f} |"
            for s, ps, pk, ls, lk in rows
        ),
    ]
    if args.write:
        sizes = " ".join(str(s) for s in args.sizes)
        update_results(
            "memory_scaling",
            "\n".join(table),
            f".venv/bin/python bench/memory_scaling.py --sizes {sizes} --write",
        )
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
