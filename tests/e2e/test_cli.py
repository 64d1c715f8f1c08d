"""The ``wreg`` command as a user runs it: JSON output, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.commands import one_line_error, wreg
from wreg.testing.procs import free_port
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer


def test_push_and_pull_json(client_env: dict[str, str], tmp_path: Path) -> None:
    model = tmp_path / "tiny-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden": 8}')
    (model / "sub" / "weights.bin").write_bytes(os.urandom(300_000))
    (model / "run.sh").write_text("#!/bin/sh\n")
    (model / "run.sh").chmod(0o755)

    out = wreg("push", str(model), "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    pushed = json.loads(out.stdout)
    assert pushed["reference"] == "tiny-model@latest"  # default: the directory's name
    assert pushed["files"] == 3
    assert pushed["bytes_total"] == 300_000 + 13 + 10
    assert pushed["bytes_new"] == pushed["bytes_total"]
    assert pushed["bytes_sent"] > 300_000
    assert set(pushed) >= {
        "reference",
        "manifest",
        "files",
        "bytes_total",
        "bytes_new",
        "bytes_sent",
    }

    dest = tmp_path / "out"
    out = wreg("pull", "tiny-model", "-o", str(dest), "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    pulled = json.loads(out.stdout)
    assert set(pulled) >= {
        "reference",
        "manifest",
        "path",
        "bytes_total",
        "bytes_downloaded",
        "bytes_from_cache",
    }
    assert pulled["manifest"] == pushed["manifest"]
    assert pulled["path"] == str(dest)
    assert (dest / "sub" / "weights.bin").read_bytes() == (
        model / "sub" / "weights.bin"
    ).read_bytes()
    # Mode bits, not os.access: as root (CI) X_OK holds once any execute bit is set.
    assert (dest / "run.sh").stat().st_mode & 0o111 == 0o111
    assert (dest / "config.json").stat().st_mode & 0o111 == 0

    out = wreg("ls", "--json", env=client_env)
    names = [r["name"] for r in json.loads(out.stdout)["repositories"]]
    assert "tiny-model" in names
    out = wreg("ls", "tiny-model", "--json", env=client_env)
    tags = json.loads(out.stdout)["tags"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("latest", pushed["manifest"])]


def test_human_output_is_not_json(client_env: dict[str, str], tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.txt").write_text("hello")
    out = wreg("push", str(model), "plain/model@v1", env=client_env)
    assert out.returncode == 0
    assert out.stdout.startswith("pushed plain/model@v1 blake3:")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["push", "/nonexistent/model"], "no such file or directory"),
        (["push", "{empty}"], "contains no files"),
        (["push", "{file}"], "not a directory"),
        (["push", "{model}", "Bad Name"], "invalid repository name"),
        (["push", "{model}", "ok@bad/tag"], "invalid tag"),
        (["push", "{Upper}"], "not a valid repository name"),
        (["pull", "no/such-model@v1"], "not found"),
        (["pull", "nosuch@" + "blake3:" + "0" * 64], "not found"),
        (["pull", "x@blake3:123"], "invalid"),
        (["ls", "BAD"], "invalid repository name"),
    ],
)
def test_bad_input_gets_one_line(
    client_env: dict[str, str], tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "f").write_text("x")
    (tmp_path / "Upper").mkdir()
    (tmp_path / "Upper" / "f").write_text("x")
    fmt = {k: str(tmp_path / k) for k in ("empty", "file", "model", "Upper")}
    one_line_error(wreg(*[a.format(**fmt) for a in args], env=client_env), needle)


def test_server_unreachable(tmp_path: Path) -> None:
    env = os.environ | {"WREG_URL": f"http://127.0.0.1:{free_port()}", "WREG_CACHE": str(tmp_path)}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "f").write_text("x")
    one_line_error(wreg("push", str(tmp_path / "m"), env=env), "cannot reach the registry")
    one_line_error(wreg("pull", "m", env=env), "cannot reach the registry")


def test_corrupt_chunk_on_server_is_refused_and_nothing_is_written(
    server: RunningServer, client_env: dict[str, str], tmp_path: Path
) -> None:
    model = tmp_path / "victim"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(100_000))
    assert wreg("push", str(model), "--json", env=client_env).returncode == 0
    stored = [p for p in (server.data / "objects").rglob("*") if p.is_file()]
    from wreg.core.digest import digest_bytes

    key = digest_bytes((model / "weights.bin").read_bytes()).split(":")[1]
    target = next(p for p in stored if p.name == key)
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 0xFF
    target.write_bytes(bytes(blob))
    dest = tmp_path / "out"
    out = wreg("pull", "victim", "-o", str(dest), env=client_env)
    one_line_error(out, "does not match its digest")
    assert not (dest / "weights.bin").exists()
    cache = Path(client_env["WREG_CACHE"])
    assert list((cache / "blobs").iterdir()) == []
    # A permanent failure (the registry serves bad bytes) leaves no partial file behind.
    assert sorted(p.name for p in (cache / "tmp").iterdir()) == []


def test_real_model_via_cli(client_env: dict[str, str], tmp_path: Path) -> None:
    model = base_model()
    out = wreg("push", str(model), "cli/minilm@v1", "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["files"] >= 10
