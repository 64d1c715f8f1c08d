"""What every benchmark shares: its command line, the machine line, and ``RESULTS.md``.

Each bench is ``main()`` over these::

    parser = bench_parser(__doc__)              # --write is always there
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    return publish("codec", run(args.runs), write=args.write)

``publish`` prints the figures and, with ``--write``, replaces the bench's section of
``bench/RESULTS.md`` (between ``<!-- BEGIN name -->`` and ``<!-- END name -->``),
recording the command that made them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import pyfastcdc

RESULTS = Path(__file__).with_name("RESULTS.md")


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with ``--write``."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0] if doc else None)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    return parser


def machine() -> str:
    """CPU model, CPU count, Python and pyfastcdc versions: the line each table starts with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pyfastcdc {pyfastcdc.__version__} ({pyfastcdc.FastCDC.__module__})"
    )


def this_command() -> str:
    """The command line this bench runs under, as ``RESULTS.md`` records it."""
    return " ".join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def update_results(section: str, body: str, command: str) -> None:
    """Replace (or append) the section between this bench's markers in RESULTS.md."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\nCommand: `{command}`\n\n{body}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    RESULTS.write_text(text)


def publish(section: str, body: str, *, write: bool, command: str | None = None) -> int:
    """Print ``body``; with ``write``, also store it as ``section`` of RESULTS.md (made by
    ``command``, this process's own command line by default). Returns 0, main's status."""
    print(body)
    if write:
        update_results(section, body, command or this_command())
    return 0
