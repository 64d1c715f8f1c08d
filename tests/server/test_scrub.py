"""`wreg-server verify`: the server finds chunks that rotted or vanished at rest."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.server.server_support import make_settings, running
from wreg import Client
from wreg.core.digest import hex_of
from wreg.testing.servers import run_wreg_server
from wreg_server.app import create_app


def _verify(data: Path) -> subprocess.CompletedProcess[str]:
    return run_wreg_server("verify", "--data", str(data), "--json")


def test_verify_reports_corrupt_and_missing_chunks_and_the_models_holding_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.bin").write_bytes(os.urandom(100_000))
    (model / "b.bin").write_bytes(os.urandom(60_000))
    with running(create_app(make_settings(data))) as url:
        pushed = Client(url, cache_dir=tmp_path / "cache").push(model, "team/rot@v1")

    clean = _verify(data)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"]
    assert report["chunks_checked"] == pushed.chunks_total
    assert (report["corrupt"], report["missing"], report["affected"]) == ([], [], [])

    objects = sorted((data / "objects" / "chunks").rglob("*"))
    files = [p for p in objects if p.is_file()]
    rotten, gone = files[0], files[1]
    blob = bytearray(rotten.read_bytes())
    blob[-1] ^= 0x01
    rotten.write_bytes(bytes(blob))
    gone.unlink()

    out = _verify(data)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert not report["ok"]
    assert [hex_of(d) for d in report["corrupt"]] == [rotten.name]
    assert [hex_of(d) for d in report["missing"]] == [gone.name]
    assert report["affected"] == [f"team/rot@{pushed.manifest}"]

    text = run_wreg_server("verify", "--data", str(data))
    assert text.returncode == 1
    assert "1 corrupt, 1 missing" in text.stdout
    assert f"affected team/rot@{pushed.manifest}" in text.stdout
