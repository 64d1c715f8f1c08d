"""A pull written from docs/WIRE-FORMAT.md alone, against a live ``wreg-server``.

``wreg push`` puts the real model (fp32) and its bf16 variant into a real server; then the
spec's puller — plain HTTP plus ``tests/core/wire_decoder.py``, which imports nothing of
wreg — reads the manifest by tag (§5 step 1: digest, canonical form, file identities),
fetches every chunk in batches of frames (§4) and one with a single ``GET``, decodes and
verifies each (§3), and assembles files equal byte for byte to the pushed ones.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.core import wire_decoder
from wreg import Client
from wreg.testing import realdata
from wreg.testing.realdata import RealDataUnavailable
from wreg.testing.servers import RunningServer

CHUNK_MEDIA_TYPE = "application/vnd.wreg.chunk.v1"
FRAMES_MEDIA_TYPE = "application/vnd.wreg.chunk-frames.v1"
BATCH_RAW_BYTES = 24 << 20  # well under the 64 MiB answer cap, whatever the encoding saves


def _pull(url: str, name: str, tag: str) -> tuple[dict[str, bytes], set[int]]:
    """Every file of ``name@tag``, as the spec's puller assembles it, and the transforms
    of the chunks it decoded."""
    base = f"{url}/v1/repositories/{name}"
    transforms: set[int] = set()
    with httpx.Client(timeout=60) as http:
        answer = http.get(f"{base}/manifests/{tag}")
        answer.raise_for_status()
        digest = answer.headers["Wreg-Manifest-Digest"]
        assert answer.headers["ETag"] == f'"{digest}"'
        doc = wire_decoder.parse_manifest(answer.content, digest)
        chunks = {c["digest"]: c["size"] for f in doc["files"] for c in f["chunks"]}
        raw: dict[str, bytes] = {}
        batch: list[str] = []
        budget = 0
        for d, size in [*chunks.items(), ("", 0)]:  # a sentinel flushes the last batch
            if batch and (not d or budget + size > BATCH_RAW_BYTES or len(batch) == 1024):
                answer = http.post(f"{base}/chunks/fetch", json={"digests": batch})
                answer.raise_for_status()
                assert answer.headers["Content-Type"] == FRAMES_MEDIA_TYPE
                frames = list(wire_decoder.frames(answer.content))
                assert [f for f, _ in frames] == batch  # request order
                for asked, encoded in frames:
                    raw[asked] = wire_decoder.decode(encoded, asked)
                    assert len(raw[asked]) == chunks[asked]
                    transforms.add(encoded[6])
                batch, budget = [], 0
            if d:
                batch.append(d)
                budget += size
        single = next(iter(chunks))
        answer = http.get(f"{base}/chunks/{single}")
        answer.raise_for_status()
        assert answer.headers["Content-Type"] == CHUNK_MEDIA_TYPE
        assert wire_decoder.decode(answer.content, single) == raw[single]
    files = {f["path"]: b"".join(raw[c["digest"]] for c in f["chunks"]) for f in doc["files"]}
    return files, transforms


@pytest.mark.parametrize("which", ["base", "bf16"])
def test_spec_puller_gets_the_pushed_files(
    which: str, server: RunningServer, tmp_path: Path
) -> None:
    try:
        model = realdata.variant(which)
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")
    Client(server.url, cache_dir=tmp_path / "cache").push(model, f"spec/minilm@{which}")
    files, transforms = _pull(server.url, "spec/minilm", which)
    expected = {
        str(p.relative_to(model)): p.read_bytes() for p in sorted(model.rglob("*")) if p.is_file()
    }
    assert files.keys() == expected.keys()
    for path, data in expected.items():
        assert files[path] == data, path
    # fp32 travels as transform 4 (bytegroup4_exp), bf16 as 3; JSON and headers as 0.
    assert transforms == ({0, 4} if which == "base" else {0, 3})
