"""Client memory as the model grows: peak RSS of ``wreg push`` and ``wreg pull`` for a
1 GiB and a 4 GiB model (issue target: ≤ 300 MB and flat).

Uses the transfer bench's generated models (real weights, tiled; 256 MiB shards), a
fresh ``wreg-server`` on the embedded default per size, an empty node cache per pull,
and ``/usr/bin/time -v`` for the peak RSS.

    .venv/bin/python bench/memory_scaling.py [--sizes 1 4] [--write]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from results import bench_parser, machine, publish
from transfer import ROOT, WREG, generate, timed, tree_size
from wreg.testing.servers import start_server


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4], help="GiB")
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
    sizes = " ".join(str(s) for s in args.sizes)
    command = f".venv/bin/python bench/memory_scaling.py --sizes {sizes} --write"
    return publish("memory_scaling", "\n".join(table), write=args.write, command=command)


if __name__ == "__main__":
    raise SystemExit(main())
