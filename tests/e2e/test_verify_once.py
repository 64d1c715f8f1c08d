"""Manifest schema 2: every byte is verified once, as it arrives (issue 11, item 1).

A schema-2 file is named by its ordered chunk list, so a file assembled from chunks that
each matched their digest needs no read-back; schema-1 files (named by their content)
still are read back once. Caches from before schema 2 migrate by hard links.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from wreg import Client
from wreg.core.digest import digest_bytes
from wreg.core.manifest import FileEntry, Manifest, canonical_json
from wreg.testing.servers import RunningServer

MiB = 1 << 20
SIZE = 24 * MiB


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """``once/v2@v1`` (schema 2, as pushed) and ``once/v1@v1``: the same files and chunks
    in a schema-1 manifest (content digests), committed by hand."""
    model = tmp_path_factory.mktemp("once") / "model"
    model.mkdir()
    data = os.urandom(SIZE)
    (model / "weights.bin").write_bytes(data)
    cache = tmp_path_factory.mktemp("pusher")
    client = Client(server.url, cache_dir=cache)
    digest = client.push(model, "once/v2@v1").manifest
    got = httpx.get(f"{server.url}/v1/repositories/once/v2/manifests/{digest}")
    v2 = Manifest.from_json_bytes(got.content)
    assert v2.schema == 2
    entry = v2.files[0]
    v1_entry = FileEntry(entry.path, entry.size, digest_bytes(data), entry.mode, entry.chunks)
    body = canonical_json(Manifest((v1_entry,), {}, schema=1).to_json())
    r = httpx.put(
        f"{server.url}/v1/repositories/once/v1/manifests/{digest_bytes(body)}",
        content=body,
        params={"tag": "v1"},
    )
    assert r.status_code == 201, r.text
    return v2


# The bytes a pull reads through read(2)-like calls (sockets included), from a fresh
# process: /proc/self/io's rchar after the pull minus before it.
_READS = """
import sys
from pathlib import Path
from wreg import Client

def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise SystemExit("no rchar")

client = Client(sys.argv[1], cache_dir=Path(sys.argv[2]))
before = rchar()
client.pull(sys.argv[3])
print(rchar() - before)
"""


def _bytes_read(server: RunningServer, cache: Path, ref: str) -> int:
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _READS, server.url, str(cache), ref],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout)


def test_a_schema_2_pull_does_not_read_files_back(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    v2 = _bytes_read(server, tmp_path / "c2", "once/v2@v1")
    v1 = _bytes_read(server, tmp_path / "c1", "once/v1@v1")
    # Both receive the (incompressible) bytes once; schema 1 reads the file back too.
    assert v1 - v2 > 0.8 * SIZE, (v1, v2)
    assert v2 < 1.5 * SIZE, v2


def test_a_resumed_chunk_is_checked_before_it_is_trusted(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    """A chunk a previous run recorded as written, then damaged on disk (a crash lost
    it): the next pull reads the resumed chunks back, fetches that one again, and the
    file it commits is right."""
    cache = tmp_path / "cache"
    entry = pushed.files[0]
    part = cache / "tmp" / f"{entry.digest[7:]}.part"
    progress = cache / "tmp" / f"{entry.digest[7:]}.progress"
    part.parent.mkdir(parents=True)
    first = entry.chunks[0]
    client = Client(server.url, cache_dir=tmp_path / "source")
    client.pull("once/v2@v1", tmp_path / "source-out")
    good = (tmp_path / "source-out" / entry.path).read_bytes()
    # What a killed pull leaves: the first chunk written and recorded — but damaged.
    damaged = bytearray(good[: first.size])
    damaged[len(damaged) // 2] ^= 0xFF
    part.write_bytes(bytes(damaged))
    part.chmod(0o600)
    progress.write_text(f"wreg-progress 1 {entry.digest} {entry.size}\n0\n")
    progress.chmod(0o600)
    result = Client(server.url, cache_dir=cache).pull("once/v2@v1", tmp_path / "out")
    assert (tmp_path / "out" / entry.path).read_bytes() == good
    assert result.bytes_resumed == first.size
    assert result.chunks_downloaded == len(entry.chunks)  # the damaged one again, too


def test_a_cache_from_schema_1_migrates_by_hard_links(
    server: RunningServer, pushed: Manifest, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    client = Client(server.url, cache_dir=cache)
    old = client.pull("once/v1@v1")
    assert old.bytes_downloaded > 0
    new = client.pull("once/v2@v1", tmp_path / "out")
    assert new.bytes_downloaded == 0
    assert new.chunks_downloaded == 0
    entry = pushed.files[0]
    blobs = cache / "blobs"
    v2_blob = blobs / entry.digest[7:]
    v1_blob = next(b for b in blobs.iterdir() if b != v2_blob)
    assert os.path.samestat(v2_blob.stat(), v1_blob.stat())  # one inode, two names
    verify = subprocess.run(  # noqa: S603 - our own CLI
        [Path(sys.executable).parent / "wreg", "cache", "verify", "--json"],
        env=os.environ | {"WREG_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["corrupt"] == []
