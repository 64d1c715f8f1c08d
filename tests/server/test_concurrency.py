"""Concurrent pushes of the same content: no 500s, one consistent result (SQLite locking)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.server.server_support import Chunk, file_of
from wreg.core.manifest import Manifest


def test_concurrent_identical_pushes(base_url: str) -> None:
    chunks = [Chunk.of(bytes([i]) * 5000) for i in range(8)]
    manifest = Manifest.build([file_of(f"f{i}", c) for i, c in enumerate(chunks)])
    body = manifest.to_json_bytes()

    def push(worker: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for chunk in chunks:
                r = client.put(
                    f"/v1/repositories/team/model/chunks/{chunk.digest}", content=chunk.encoded
                )
                statuses.append(r.status_code)
            r = client.put(
                f"/v1/repositories/team/model/manifests/{manifest.digest}",
                content=body,
                params={"tag": f"w{worker % 2}"},
            )
            statuses.append(r.status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(8)))
    assert all(s in (200, 201) for statuses in results for s in statuses), results
    # The commits serialize on the repository lock: exactly one creates the manifest (201),
    # every other finds it committed (200).
    assert sorted(statuses[-1] for statuses in results) == [200] * 7 + [201], results
    with httpx.Client(base_url=base_url) as client:
        tags = client.get("/v1/repositories/team/model/tags").json()["tags"]
        assert {(t["tag"], t["digest"]) for t in tags} == {
            ("w0", manifest.digest),
            ("w1", manifest.digest),
        }
