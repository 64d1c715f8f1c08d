"""Node cache trust against a real server, with real processes of two users: a group
cache whose other member plants blobs, manifests, refs and chunk-index rows; edits
through a hardlinked ``-o`` file; ``pull --link``; ``cache verify`` naming files; how
often blobs are re-hashed when their link count moves (``-o DIR``, ``rm -r``, ``cp -al``),
seen by the kernel (inotify ``IN_ACCESS`` on each blob's inode).

The second user is created here with ``useradd`` (CI runs as root); the pulls run as
root, the other member's writes as that user (plain ``sh`` with its uid and gid: the
venv's interpreter may sit under a home only root can enter).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.e2e import commands
from tests.e2e.test_roundtrip import assert_same_tree
from wreg import Client
from wreg.core.manifest import Manifest
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer


def wreg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return commands.wreg(*args, env=env, timeout=180)


class OtherUser(NamedTuple):
    uid: int
    gid: int

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run ``sh -c script`` as this user (its own group only)."""

        def drop() -> None:
            os.setgroups([self.gid])
            os.setgid(self.gid)
            os.setuid(self.uid)

        return subprocess.run(  # noqa: S603 - sh with the test's own script
            ["/bin/sh", "-c", script],
            preexec_fn=drop,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        )


@pytest.fixture(scope="module")
def other_user() -> Iterator[OtherUser]:
    """A second uid sharing the node cache: created, and removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root with useradd to create a second user (CI runs as root)")
    name = f"wregt{uuid.uuid4().hex[:8]}"
    subprocess.run(  # noqa: S603 - fixed arguments
        ["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", name],  # noqa: S607
        check=True,
        capture_output=True,
    )
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield OtherUser(entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)  # noqa: S603, S607


@pytest.fixture
def group_cache(other_user: OtherUser) -> Iterator[Path]:
    """A group cache the other user is a member of (its root ``2775``, that user's
    group), somewhere both can reach."""
    base = Path(tempfile.mkdtemp(prefix="wreg-trust-"))
    base.chmod(0o755)
    root = base / "cache"
    root.mkdir()
    os.chown(root, -1, other_user.gid)
    root.chmod(0o2775)
    try:
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    """nc/trust@v1 (the real model) and @ft (its fine-tune), by tag."""
    cache = tmp_path_factory.mktemp("pusher")
    client = Client(server.url, cache_dir=cache)
    out = {}
    for tag, model in (("v1", base_model()), ("ft", variant("finetune"))):
        result = client.push(model, f"nc/trust@{tag}")
        client.pull(f"nc/trust@{tag}")
        body = (cache / "manifests" / f"{result.manifest[7:]}.json").read_bytes()
        out[tag] = Manifest.from_json_bytes(body)
    return out


def _replace(path: Path) -> str:
    """A script that renames a file of its own over ``path``."""
    return f"f=/tmp/.wreg$$; echo x > $f; mv -f $f {path}; r=$?; rm -f $f; exit $r"


def _env(server: RunningServer, cache: Path) -> dict[str, str]:
    return os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(cache)}


def _weights(manifest: Manifest) -> str:
    return next(f.digest for f in manifest.files if f.path == "model.safetensors")


def test_blob_planted_by_another_member_is_rehashed_and_replaced(
    server: RunningServer,
    pushed: dict[str, Manifest],
    group_cache: Path,
    other_user: OtherUser,
    tmp_path: Path,
) -> None:
    env = _env(server, group_cache)
    assert wreg("cache", "ls", env=env).returncode == 0  # opens (creates) the cache
    assert (group_cache / "blobs").stat().st_mode & 0o7777 == 0o3775
    weights = next(f for f in pushed["v1"].files if f.path == "model.safetensors")
    blob = group_cache / "blobs" / weights.digest[7:]
    # The other member plants a same-sized, read-only file under the weights' name.
    planted = other_user.sh(f"head -c {weights.size} /dev/zero > {blob} && chmod 444 {blob}")
    assert planted.returncode == 0, planted.stderr
    assert blob.stat().st_uid == other_user.uid

    out = wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "out"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert_same_tree(base_model(), tmp_path / "out")
    assert json.loads(out.stdout)["bytes_from_cache"] == 0  # the planted file: not used
    assert blob.stat().st_uid == 0
    assert blob.stat().st_mode & 0o777 == 0o444

    # Nor can the member replace, remove or write a blob that is not theirs.
    for attack in (_replace(blob), f"rm -f {blob}", f"echo x >> {blob}", f"chmod 644 {blob}"):
        assert other_user.sh(attack).returncode != 0, attack
    assert wreg("cache", "verify", env=env).returncode == 0


def test_chunk_index_rows_into_another_members_blob_are_checked(
    server: RunningServer,
    pushed: dict[str, Manifest],
    group_cache: Path,
    other_user: OtherUser,
    tmp_path: Path,
) -> None:
    env = _env(server, group_cache)
    assert wreg("cache", "ls", env=env).returncode == 0
    # The member's own blob (any name), and index rows (the index is the group's to
    # write) claiming it holds every chunk of the fine-tune's weights.
    # Half the rows name a FIFO instead, which a reader would block on forever.
    ft = next(f for f in pushed["ft"].files if f.path == "model.safetensors")
    fake, fifo = group_cache / "blobs" / ("e" * 64), group_cache / "blobs" / ("f" * 64)
    made = other_user.sh(
        f"head -c {ft.size} /dev/urandom > {fake} && chmod 444 {fake} && mkfifo {fifo}"
    )
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(group_cache / "index.sqlite") as db:
        db.executemany(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)",
            [
                (c.digest, ("e" if i % 2 else "f") * 64, off, c.size)
                for i, (off, c) in enumerate(ft.chunk_offsets())
            ],
        )
    out = commands.wreg(
        "pull", "nc/trust@ft", "-o", str(tmp_path / "ft"), "--json", env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert_same_tree(variant("finetune"), tmp_path / "ft")
    # Every chunk was hashed, found not to be what the index said, and downloaded.
    assert json.loads(out.stdout)["bytes_downloaded"] > 0


def test_manifest_and_ref_planted_by_another_member_are_refused(
    server: RunningServer,
    pushed: dict[str, Manifest],
    group_cache: Path,
    other_user: OtherUser,
    tmp_path: Path,
) -> None:
    env = _env(server, group_cache)
    assert wreg("pull", "nc/trust@v1", env=env).returncode == 0
    v1, ft = pushed["v1"].digest, pushed["ft"].digest
    manifests = group_cache / "manifests"
    # A manifest under the fine-tune's name with v1's bytes (valid JSON, wrong name),
    # and a ref, in the member's name, sending a tag to v1.
    swap = other_user.sh(
        f"cp {manifests}/{v1[7:]}.json {manifests}/{ft[7:]}.json"
        f" && mkdir -p {group_cache}/refs/nc/trust && echo {v1} > {group_cache}/refs/nc/trust/ft"
    )
    assert swap.returncode == 0, swap.stderr
    offline = env | {"WREG_OFFLINE": "1"}
    out = wreg("pull", f"nc/trust@{ft}", env=offline)
    commands.one_line_error(out, "does not match its name")
    out = wreg("pull", "nc/trust@ft", env=offline)
    commands.one_line_error(out, "owned by uid", str(other_user.uid))
    # Trusting that uid makes its ref count; its manifest still must match its name.
    trusting = offline | {"WREG_CACHE_TRUSTED_UIDS": f"4242, {other_user.uid}"}
    out = wreg("pull", "nc/trust@ft", env=trusting)
    assert out.returncode == 0, out.stderr  # the ref says v1, which is cached and right
    # Online, the right manifest replaces the planted one.
    assert wreg("pull", "nc/trust@ft", env=env).returncode == 0
    assert wreg("pull", f"nc/trust@{ft}", env=offline).returncode == 0
    # And the member cannot replace a manifest or ref that is not theirs.
    assert other_user.sh(_replace(manifests / f"{v1[7:]}.json")).returncode != 0
    assert other_user.sh(_replace(group_cache / "refs" / "nc" / "trust" / "v1")).returncode != 0


def test_an_edit_through_a_hardlinked_output_never_reaches_another_pull(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    first = tmp_path / "first"
    assert wreg("pull", "nc/trust@v1", "-o", str(first), env=env).returncode == 0
    weights = _weights(pushed["v1"])
    blob = cache / "blobs" / weights[7:]
    assert (first / "model.safetensors").stat().st_ino == blob.stat().st_ino  # hardlinked
    # Root may write a 0444 file: the edit lands in the cached blob too.
    with open(first / "model.safetensors", "r+b") as f:
        f.seek(4096)
        f.write(b"\x00\xff" * 8)
    assert blob.read_bytes() == (first / "model.safetensors").read_bytes()
    # The fine-tune shares most chunks with v1: they are seeded, each checked first.
    out = wreg("pull", "nc/trust@ft", "-o", str(tmp_path / "ft"), env=env)
    assert out.returncode == 0, out.stderr
    assert_same_tree(variant("finetune"), tmp_path / "ft")

    out = wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "second"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert_same_tree(base_model(), tmp_path / "second")
    assert json.loads(out.stdout)["bytes_downloaded"] > 0  # the weights, fetched again
    assert blob.stat().st_ino != (first / "model.safetensors").stat().st_ino


def test_verify_names_the_models_and_files_of_a_bad_blob(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    env = _env(server, tmp_path / "cache")
    assert wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "o"), env=env).returncode == 0
    with open(tmp_path / "o" / "model.safetensors", "r+b") as f:  # through the hardlink
        f.write(b"\x01")
    weights = _weights(pushed["v1"])
    out = wreg("cache", "verify", "--json", env=env)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["corrupt"] == [weights]
    assert report["corrupt_files"] == [
        {
            "blob": weights,
            "repository": "nc/trust",
            "manifest": pushed["v1"].digest,
            "tags": ["v1"],
            "path": "model.safetensors",
        }
    ]
    assert wreg("pull", "nc/trust@v1", env=env).returncode == 0
    with open(tmp_path / "cache" / "blobs" / weights[7:], "r+b") as f:
        f.write(b"\x02")
    out = wreg("cache", "verify", env=env)
    assert out.returncode == 1
    assert f"corrupt {weights}" in out.stdout
    assert f"nc/trust@v1: model.safetensors ({weights})" in out.stdout


def _is_link_to(blob: Path) -> Callable[[Path], bool]:
    return lambda p: p.is_symlink() and os.readlink(p) == str(blob)


@pytest.mark.parametrize("link", ["copy", "reflink", "symlink"])
def test_pull_link_modes(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path, link: str
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    out_dir = tmp_path / "out"
    out = wreg("pull", "nc/trust@v1", "-o", str(out_dir), "--link", link, env=env)
    assert out.returncode == 0, out.stderr
    assert_same_tree(base_model(), out_dir)
    weights = _weights(pushed["v1"])
    blob = cache / "blobs" / weights[7:]
    placed = out_dir / "model.safetensors"
    if link == "symlink":
        assert _is_link_to(blob)(placed)
    else:
        assert not placed.is_symlink()
        assert placed.stat().st_ino != blob.stat().st_ino
        assert placed.stat().st_mode & 0o200  # the user's own file, to write into
        with open(placed, "r+b") as f:
            f.write(b"\x00" * 16)
        assert wreg("cache", "verify", env=env).returncode == 0  # the cache is untouched
    # Pulling again the same way is a no-op (the symlink is recognised, not refused).
    out = wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "again"), "--link", link, env=env)
    assert out.returncode == 0, out.stderr
    if link == "symlink":
        out = wreg("pull", "nc/trust@v1", "-o", str(out_dir), "--link", link, env=env)
        assert out.returncode == 0, out.stderr
    out = wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "x"), "--link", "bogus", env=env)
    assert out.returncode == 2


_IN_ACCESS, _IN_Q_OVERFLOW, _IN_NONBLOCK, _IN_CLOEXEC = 0x1, 0x4000, 0o4000, 0o2000000


def _pull_reading(
    cache: Path, *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """``wreg ARGS...`` and the bytes of the cached blobs it read (re-hashed, as a pull
    -o with hardlinks reads a blob for nothing else): each blob there is watched by
    inode (``IN_ACCESS``, through any of its names) while the command runs."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        sizes = {}
        for blob in (cache / "blobs").iterdir():
            wd = libc.inotify_add_watch(fd, str(blob).encode(), _IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            sizes[wd] = blob.stat().st_size
        out = wreg(*args, env=env)
        read: set[int] = set()
        while True:
            try:
                events = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            at = 0
            while at < len(events):
                wd, mask, _cookie, name_len = struct.unpack_from("iIII", events, at)
                assert not mask & _IN_Q_OVERFLOW, "inotify queue overflowed"
                if mask & _IN_ACCESS:
                    read.add(wd)
                at += 16 + name_len
    finally:
        os.close(fd)
    return out, sum(sizes[wd] for wd in read)


def _blob_bytes(manifest: Manifest) -> int:
    return sum({f.digest: f.size for f in manifest.files}.values())


def test_a_second_pull_into_another_dir_rehashes_nothing(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    assert wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "a"), env=env).returncode == 0
    for name in ("b", "c"):  # each -o links every blob once more
        out, rehashed = _pull_reading(
            cache, "pull", "nc/trust@v1", "-o", str(tmp_path / name), "--json", env=env
        )
        assert out.returncode == 0, out.stderr
        assert rehashed == 0, f"pull -o {name} re-hashed {rehashed} bytes"
        assert json.loads(out.stdout)["bytes_downloaded"] == 0
        assert_same_tree(base_model(), tmp_path / name)
        weights = cache / "blobs" / _weights(pushed["v1"])[7:]
        assert (tmp_path / name / "model.safetensors").stat().st_ino == weights.stat().st_ino


def test_links_made_or_removed_by_others_cost_one_rehash(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    first = tmp_path / "first"
    assert wreg("pull", "nc/trust@v1", "-o", str(first), env=env).returncode == 0
    everything = _blob_bytes(pushed["v1"])

    def remove_first() -> None:  # the user removes an -o DIR
        shutil.rmtree(first)

    def copy_with_links() -> None:  # the user copies one, as hardlinks
        cp = shutil.which("cp")
        assert cp is not None
        subprocess.run([cp, "-al", str(tmp_path / "o0"), str(tmp_path / "copy")], check=True)  # noqa: S603

    for n, outside in enumerate((remove_first, copy_with_links)):
        outside()
        out, rehashed = _pull_reading(
            cache, "pull", "nc/trust@v1", "-o", str(tmp_path / f"o{n}"), env=env
        )
        assert out.returncode == 0, out.stderr
        assert rehashed == everything  # each blob's ctime moved: each re-hashed, once
        out, rehashed = _pull_reading(
            cache, "pull", "nc/trust@v1", "-o", str(tmp_path / f"again{n}"), env=env
        )
        assert out.returncode == 0, out.stderr
        assert rehashed == 0, f"the pull after that re-hashed {rehashed} bytes"
        assert_same_tree(base_model(), tmp_path / f"again{n}")


def test_force_replacing_a_hardlinked_file_keeps_the_old_blob_trusted(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    work = tmp_path / "work"
    assert wreg("pull", "nc/trust@v1", "-o", str(work), env=env).returncode == 0
    # The fine-tune over it: its weights replace the link to v1's weights blob.
    out = wreg("pull", "nc/trust@ft", "-o", str(work), "--force", env=env)
    assert out.returncode == 0, out.stderr
    assert_same_tree(variant("finetune"), work)
    out, rehashed = _pull_reading(cache, "pull", "nc/trust@v1", "-o", str(tmp_path / "v1"), env=env)
    assert out.returncode == 0, out.stderr
    assert rehashed == 0, f"pull -o after --force re-hashed {rehashed} bytes"
    assert_same_tree(base_model(), tmp_path / "v1")


def test_an_edit_keeping_size_and_mtime_is_caught_after_links_are_recorded(
    server: RunningServer, pushed: dict[str, Manifest], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = _env(server, cache)
    for name in ("a", "b"):  # the second -o re-records each blob's stat after linking
        assert wreg("pull", "nc/trust@v1", "-o", str(tmp_path / name), env=env).returncode == 0
    weights = _weights(pushed["v1"])
    blob = cache / "blobs" / weights[7:]
    edited = tmp_path / "b" / "model.safetensors"
    before = edited.stat()
    with open(edited, "r+b") as f:  # root may write a 0444 file: through the hardlink
        f.seek(8192)
        flipped = bytes(x ^ 0xFF for x in f.read(16))
        f.seek(8192)
        f.write(flipped)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))  # size, mtime as before
    now = blob.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert blob.read_bytes() != (base_model() / "model.safetensors").read_bytes()

    out = wreg("pull", "nc/trust@v1", "-o", str(tmp_path / "c"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["bytes_downloaded"] > 0  # the weights, fetched again
    assert_same_tree(base_model(), tmp_path / "c")
    assert blob.stat().st_ino != before.st_ino  # a new blob, not the edited inode
    assert blob.read_bytes() == (base_model() / "model.safetensors").read_bytes()
    # Repaired, and trusted as such: the next pull reads nothing.
    out, rehashed = _pull_reading(
        cache, "pull", "nc/trust@v1", "-o", str(tmp_path / "d"), "--json", env=env
    )
    assert out.returncode == 0, out.stderr
    assert rehashed == 0, f"the pull after the repair re-hashed {rehashed} bytes"
    assert json.loads(out.stdout)["bytes_downloaded"] == 0
