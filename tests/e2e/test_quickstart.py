"""``make run`` (``scripts/quickstart.py``) as a newcomer sees it: one screen (at most 24
lines of at most 100 columns), each step said as it starts (the line arrives before the
step's work is done, not all at the end), human sizes, no raw JSON, and the headline: the
fine-tune sent a small part of the model."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from wreg.testing.realdata import base_model, variant

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("model:", "server:", "push:", "pull:", "fine-tune:", "warm pull:")
_HEADLINE = re.compile(
    r"^fine-tune: sent (\d+(?:\.\d+)?) (B|KB|MB|GB) of (\d+(?:\.\d+)?) (MB|GB) "
    r"\((\d+(?:\.\d+)?)%\) — the rest was already in the registry$"
)
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def run_quickstart(timeout: float = 300) -> tuple[int, list[tuple[float, str]], str]:
    """Run the script as ``make run`` does; its status, (seconds since start, line) of
    every line of its stdout as it arrived, and its stderr."""
    begun = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - our own script, this interpreter
        [sys.executable, str(ROOT / "scripts" / "quickstart.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = [(time.monotonic() - begun, line.rstrip("\n")) for line in process.stdout]
    _out, err = process.communicate(timeout=timeout)
    return process.returncode, lines, err


def test_make_run_fits_one_screen_says_each_step_and_ends_with_the_headline() -> None:
    base_model(), variant("finetune")  # fetched beforehand: the run below is timed
    code, timed, err = run_quickstart()
    lines = [line for _at, line in timed]
    output = "\n".join(lines)
    assert code == 0, f"{output}\n{err}"
    assert len(lines) <= 24, output
    assert all(len(line) <= 100 for line in lines), output
    assert "{" not in output, "raw JSON in the output"
    assert "bytes_" not in output

    starts = [i for i, line in enumerate(lines) if re.match(r"\[\d/\d\] ", line)]
    assert len(starts) == len(STEPS), output
    for n, i in enumerate(starts, 1):
        assert lines[i].startswith(f"[{n}/{len(STEPS)}] {STEPS[n - 1]}"), lines[i]
        took = re.match(r"^ +(\d+\.\d) s  \S", lines[i + 1])
        assert took, f"no result line after {lines[i]!r}"
        # Said as it started: the step line came before the work (of more than a moment).
        if float(took.group(1)) >= 1.0:
            assert timed[i + 1][0] - timed[i][0] >= 0.5 * float(took.group(1)), timed

    assert re.search(r"\b\d+\.\d MB\b", output), "human sizes"
    headline = [m for line in lines if (m := _HEADLINE.match(line))]
    assert len(headline) == 1, output
    sent, sent_unit, total, total_unit, pct = headline[0].groups()
    assert float(pct) < 50
    ratio = 100 * float(sent) * _UNITS[sent_unit] / (float(total) * _UNITS[total_unit])
    assert abs(ratio - float(pct)) < 1, headline[0].group(0)
    assert lines[-1].startswith("make run: OK")
