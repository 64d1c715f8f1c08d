"""``wreg pull --max-total``: what a pull writes is bounded before anything is written.

A manifest may list one chunk many times, so a tiny download can mean terabytes on disk.
Against a real server, manifests committed by hand (a hostile pusher) name one small chunk
over and over; the file digest of the 1 TiB file is made up, which the client could only
find out after writing it all.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.e2e import commands
from wreg import Client
from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.errors import ErrorCode, InvalidInput
from wreg.core.manifest import canonical_json
from wreg.testing.servers import RunningServer

TiB = 1 << 40


def _commit_repeated(url: str, name: str, raw: bytes, times: int, file_digest: str) -> None:
    chunk = digest_bytes(raw)
    doc = {
        "schema": 1,
        "files": [
            {
                "path": "weights.bin",
                "size": len(raw) * times,
                "digest": file_digest,
                "mode": 0o644,
                "chunks": [{"digest": chunk, "size": len(raw)}] * times,
            }
        ],
        "metadata": {},
    }
    body = canonical_json(doc)
    with httpx.Client(base_url=url, timeout=60) as http:
        chunks = f"/v1/repositories/{name}/chunks"
        assert http.put(f"{chunks}/{chunk}", content=encode_chunk(raw)).status_code in (200, 201)
        r = http.put(
            f"/v1/repositories/{name}/manifests/{digest_bytes(body)}",
            content=body,
            params={"tag": "v1"},
        )
        assert r.status_code in (200, 201), r.text


def _written(cache: Path) -> list[Path]:
    return [p for p in (cache / "blobs").rglob("*") if p.is_file()] if cache.exists() else []


@pytest.fixture(scope="module")
def terabyte(server: RunningServer) -> str:
    """A 1 TiB file made of one 8 MiB chunk 131072 times (a 12 MB manifest)."""
    _commit_repeated(server.url, "lim/huge", bytes(8 << 20), TiB // (8 << 20), digest_bytes(b"?"))
    return "lim/huge@v1"


@pytest.fixture(scope="module")
def small(server: RunningServer) -> str:
    """A 6.4 MiB file made of one 64 KiB chunk 100 times (a true file digest)."""
    raw = bytes(range(256)) * 256
    _commit_repeated(server.url, "lim/small", raw, 100, digest_bytes(raw * 100))
    return "lim/small@v1"


def test_default_limit_is_the_free_space(
    server: RunningServer, terabyte: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InvalidInput) as info:
        Client(server.url, cache_dir=cache).pull(terabyte)
    assert info.value.code is ErrorCode.PULL_TOO_LARGE
    assert "free" in str(info.value)
    assert _written(cache) == []


@pytest.mark.parametrize("dest", [False, True])
def test_max_total_refuses_before_writing(
    server: RunningServer, small: str, tmp_path: Path, dest: bool
) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out" if dest else None
    with pytest.raises(InvalidInput) as info:
        Client(server.url, cache_dir=cache).pull(small, out, max_total="1M")
    assert info.value.code is ErrorCode.PULL_TOO_LARGE
    assert info.value.detail["needed"] == 6_553_600
    assert _written(cache) == []
    assert out is None or not out.exists()


def test_max_total_allows_a_pull_that_fits(
    server: RunningServer, small: str, tmp_path: Path
) -> None:
    result = Client(server.url, cache_dir=tmp_path / "cache").pull(
        small, tmp_path / "out", max_total=6_553_600
    )
    assert result.bytes_total == 6_553_600
    assert (tmp_path / "out" / "weights.bin").stat().st_size == 6_553_600
    # Already cached, the same pull writes nothing more, so any limit lets it through.
    Client(server.url, cache_dir=tmp_path / "cache").pull(small, max_total=0)


def test_cli_says_why_in_one_line(server: RunningServer, terabyte: str, tmp_path: Path) -> None:
    env = os.environ | {"WREG_URL": server.url, "WREG_CACHE": str(tmp_path / "cache")}
    done = commands.wreg("pull", terabyte, "--max-total", "500G", env=env, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "--max-total" in lines[0]
    assert "1024.00 GiB" in lines[0]
    bad = commands.wreg("pull", terabyte, "--max-total", "lots", env=env, timeout=120)
    assert bad.returncode != 0
    assert "invalid size" in bad.stderr
