"""Start-up removes what a crashed HF upload or mirror fetch left in ``<data>/tmp``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from wreg_server.hf import STALE_SPOOL_SECONDS, sweep_spool


def test_sweep_removes_only_stale_spools_of_its_own(tmp_path: Path) -> None:
    old = time.time() - STALE_SPOOL_SECONDS - 60
    stale = [tmp_path / "mirror-abc", tmp_path / "hf-commit-x", tmp_path / "hf-lfs-y"]
    fresh = tmp_path / "hf-commit-live"
    foreign = tmp_path / "someone-else"
    for d in [*stale, fresh, foreign]:
        d.mkdir()
        (d / "body").write_bytes(b"x")
    for d in [*stale, foreign]:
        os.utime(d, (old, old))
    assert sweep_spool(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-commit-live", "someone-else"]
    assert sweep_spool(tmp_path / "absent") == 0
