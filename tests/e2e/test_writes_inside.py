"""``wreg pull -o DIR`` writes only inside DIR, through no link planted there, and never
over a user's different file; ``wreg push DIR`` does not follow links out of DIR."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.commands import one_line_error, wreg


def _push(env: dict[str, str], tmp_path: Path, files: dict[str, bytes], name: str) -> None:
    model = tmp_path / name
    for rel, data in files.items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(data)
    out = wreg("push", str(model), env=env)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("planted", "model_path", "link_at"),
    [
        ("dir", "sub/weights.bin", "sub"),  # DIR/sub -> /elsewhere
        ("dir", "a/b/weights.bin", "a/b"),  # DIR/a/b -> /elsewhere, a a real directory
        ("file", "weights.bin", "weights.bin"),  # DIR/weights.bin -> /elsewhere/victim
    ],
)
def test_pull_refuses_links_planted_in_dir(
    client_env: dict[str, str], tmp_path: Path, planted: str, model_path: str, link_at: str
) -> None:
    _push(client_env, tmp_path, {model_path: os.urandom(5000), "config.json": b"{}"}, "linked")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "out"
    (dest / link_at).parent.mkdir(parents=True, exist_ok=True)
    (dest / link_at).symlink_to(elsewhere if planted == "dir" else victim)

    out = wreg("pull", "linked", "-o", str(dest), env=client_env)
    one_line_error(out, link_at, "symlink")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert victim.read_bytes() == b"precious"
    assert (dest / link_at).is_symlink()  # left as it was: not followed, not replaced
    # Even --force does not write through (nor replace) a link in a directory component.
    if planted == "dir":
        out = wreg("pull", "linked", "-o", str(dest), "--force", env=client_env)
        one_line_error(out, link_at, "symlink")
        assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]


def test_pull_refuses_to_overwrite_a_different_file(
    client_env: dict[str, str], tmp_path: Path
) -> None:
    weights = os.urandom(7000)
    _push(client_env, tmp_path, {"weights.bin": weights, "config.json": b"{}"}, "mine")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "config.json").write_text("my own notes")

    out = wreg("pull", "mine", "-o", str(dest), env=client_env)
    one_line_error(out, str(dest / "config.json"), "--force")
    assert (dest / "config.json").read_text() == "my own notes"
    assert not (dest / "weights.bin").exists()  # refused before writing anything

    out = wreg("pull", "mine", "-o", str(dest), "--force", env=client_env)
    assert out.returncode == 0, out.stderr
    assert (dest / "config.json").read_bytes() == b"{}"
    assert (dest / "weights.bin").read_bytes() == weights


def test_pull_again_into_the_same_dir_is_idempotent(
    client_env: dict[str, str], tmp_path: Path, cache_dir: Path
) -> None:
    weights = os.urandom(6000)
    _push(client_env, tmp_path, {"weights.bin": weights, "sub/config.json": b"{}"}, "again")
    dest = tmp_path / "out"
    for _ in range(2):
        out = wreg("pull", "again", "-o", str(dest), env=client_env)
        assert out.returncode == 0, out.stderr
    # A copy with the same bytes (not the cache's inode, e.g. another filesystem) counts too.
    (dest / "weights.bin").unlink()
    (dest / "weights.bin").write_bytes(weights)
    out = wreg("pull", "again", "-o", str(dest), env=client_env)
    assert out.returncode == 0, out.stderr
    assert (dest / "weights.bin").read_bytes() == weights


def test_push_skips_links_out_of_the_directory(client_env: dict[str, str], tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "id_rsa").write_text("private key")
    model = tmp_path / "leaky"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(os.urandom(3000))
    (model / "key").symlink_to(outside / "id_rsa")
    (model / "secrets").symlink_to(outside)
    (model / "inner").symlink_to("config.json")  # stays inside: followed

    out = wreg("push", str(model), "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    pushed = json.loads(out.stdout)
    assert pushed["files"] == 3  # config.json, inner, sub/weights.bin
    assert sorted(pushed["skipped"]) == ["key", "secrets"]

    out = wreg("push", str(model), "leaky@plain", env=client_env)
    assert out.returncode == 0, out.stderr
    assert "skipped key: a symlink out of the directory" in out.stdout
    assert "skipped secrets: a symlink out of the directory" in out.stdout

    out = wreg("push", str(model), "leaky@all", "--follow-symlinks", "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    followed = json.loads(out.stdout)
    assert followed["files"] == 5
    assert followed["skipped"] == []
