"""The short version of ``bench/load.py`` (``make soak`` runs the long one).

A real ``wreg-server`` process on 127.0.0.1, 4 clients pushing and pulling distinct
models for 5 s: no request may fail, and the server's RSS may not grow by more than
``MAX_GROWTH_MIB`` after the warmup (a leak per request would show as steady growth).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_GROWTH_MIB = 32


def test_short_load_has_no_errors_and_flat_rss(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [sys.executable, str(ROOT / "bench" / "load.py")]
    command += ["--duration", "5", "--warmup", "1", "--clients", "4", "--json", str(out)]
    command += ["--max-rss-growth-mib", str(MAX_GROWTH_MIB)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)  # noqa: S603 - this interpreter running bench/load.py
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["error_samples"]
    assert result["cycles"] > 0, proc.stdout
    ops = result["ops"]
    assert ops["chunk GET"]["count"] > 0, ops
    assert ops["missing (pull)"]["count"] > 0, ops
    assert result["rss_mib"]["growth"] <= MAX_GROWTH_MIB, result["rss_mib"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
