"""Scale-out: two ``wreg-server serve`` processes on one PostgreSQL and one S3 bucket.

The deployment the README draws, minus the load balancer: replicas A and B (different
ports, each with a data directory of its own) share the index (a PostgreSQL database
migrated once with ``wreg-server db upgrade``) and the chunks (one bucket on moto).
``wreg.Client`` pushes through one and pulls through the other, then pushes different
models and the same model through both at once. After every test the registry is checked
behind the API: tags point at the manifests pushed, every referenced chunk has its one
object in the bucket under its key (and nothing else is there), and the replicas' data
directories hold nothing at all.
"""

from __future__ import annotations

import asyncio
import filecmp
import os
import random
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.services.moto import MotoS3
from tests.services.postgres import PostgresServer
from wreg import Client, PullResult, PushResult
from wreg.core.encoding import decode_chunk
from wreg.core.manifest import Manifest
from wreg.testing.realdata import base_model, variant
from wreg.testing.servers import RunningServer, start_server, upgrade_database
from wreg_server.domain.layout import chunk_key

T = TypeVar("T")
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_nodes = count()


@dataclass
class Deployment:
    a: RunningServer
    b: RunningServer
    postgres: PostgresServer
    database: str
    moto: MotoS3
    bucket: str
    verified: set[str] = field(default_factory=set)
    """Chunks whose object was already read back and decoded to its digest."""

    @property
    def replicas(self) -> tuple[RunningServer, RunningServer]:
        return self.a, self.b

    def sql(self, statement: str) -> list[list[str]]:
        out = self.postgres.sql(statement, self.database)
        return [line.split("|") for line in out.splitlines()] if out else []

    def bucket_keys(self) -> list[str]:
        """Every key in the bucket, straight from ListObjectsV2 (moto needs no signature)."""
        keys: list[str] = []
        params = {"list-type": "2"}
        while True:
            r = httpx.get(f"{self.moto.endpoint}/{self.bucket}", params=params, timeout=30)
            r.raise_for_status()
            page = ET.fromstring(r.content)  # noqa: S314 - moto's answer from 127.0.0.1, a server the tests started
            keys += [e.text or "" for e in page.iter(f"{_S3_NS}Key")]
            token = page.findtext(f"{_S3_NS}NextContinuationToken")
            if not token:
                return keys
            params = {"list-type": "2", "continuation-token": token}

    def objects(self, keys: list[str]) -> list[bytes]:
        """The objects under ``keys``, read with a signed client (moto refuses unsigned GETs)."""

        async def main() -> list[bytes]:
            store = self.moto.store(self.bucket)
            try:
                return [await store.get(key) for key in keys]
            finally:
                await store.close()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def deployment(
    postgres: PostgresServer, moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    database = postgres.create_database()
    bucket = moto_s3.create_bucket()
    env = moto_s3.env(bucket) | {"WREG_DATABASE_URL": postgres.url(database)}
    root = tmp_path_factory.mktemp("replicas")
    # Migrated once, as an operator would before starting replicas (never on start).
    upgrade_database(root / "migrate", env)
    for name in ("data-a", "data-b"):  # empty, so anything found there later was written
        (root / name).mkdir()
    a = start_server(root / "data-a", env)
    try:
        b = start_server(root / "data-b", env)
    except BaseException:
        a.stop()
        raise
    try:
        yield Deployment(a, b, postgres, database, moto_s3, bucket)
    finally:
        a.stop()
        b.stop()
        postgres.drop_database(database)


@pytest.fixture(autouse=True)
def consistent(deployment: Deployment) -> Iterator[None]:
    yield
    assert_consistent(deployment)
    assert_stateless(deployment)


def node(server: RunningServer, tmp_path: Path) -> Client:
    """A client with a node cache of its own, as on a separate machine."""
    return Client(server.url, cache_dir=tmp_path / f"node-{next(_nodes)}")


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run ``calls`` in threads released together by a barrier; every result, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result() for f in futures]


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_same_tree(a: Path, b: Path) -> None:
    names = _files(a)
    assert names
    assert names == _files(b)
    _match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])


def assert_pulls_everywhere(
    deployment: Deployment, ref: str, source: Path, tmp_path: Path, manifest: str
) -> None:
    """``ref`` pulls byte-identical through each replica onto a fresh node."""
    for replica in deployment.replicas:
        out = tmp_path / f"pulled-{next(_nodes)}"
        pulled: PullResult = node(replica, tmp_path).pull(ref, out)
        assert pulled.manifest == manifest
        assert pulled.bytes_from_cache == 0  # really fetched from this replica
        assert_same_tree(source, out)


def tag_target(deployment: Deployment, repository: str, tag: str) -> str:
    """Where ``repository:tag`` points, as each replica answers it (they must agree)."""
    digests: set[str] = set()
    for replica in deployment.replicas:
        r = httpx.get(f"{replica.url}/v1/repositories/{repository}/tags/{tag}", timeout=30)
        assert r.status_code == 200, r.text
        digests.add(r.json()["digest"])
    assert len(digests) == 1, digests
    return digests.pop()


def assert_consistent(deployment: Deployment) -> None:
    """Index and bucket agree: each referenced chunk is one live row and one object.

    * every tag points at a manifest of its own repository;
    * each manifest's chunk edges are exactly the chunks its body names;
    * every chunk row is live (not condemned by GC) and has exactly one object, under
      ``chunk_key(digest)``, whose size is the row's ``stored_size`` (and, for every
      referenced chunk, whose bytes decode to the digest);
    * the bucket holds nothing else (no temporary or duplicate objects).
    """
    bad_tags = deployment.sql(
        "SELECT t.id FROM tags t JOIN manifests m ON m.id = t.manifest_id"
        " WHERE m.repository_id <> t.repository_id"
    )
    assert bad_tags == []
    for (manifest_id,) in deployment.sql("SELECT id FROM manifests"):
        body = deployment.postgres.sql(
            f"SELECT convert_from(body, 'UTF8') FROM manifests WHERE id = {int(manifest_id)}",  # noqa: S608 - an int id; psql takes no bound parameters
            deployment.database,
        )
        edges = deployment.sql(
            f"SELECT chunk_digest FROM manifest_chunks WHERE manifest_id = {int(manifest_id)}"  # noqa: S608 - an int id; psql takes no bound parameters
        )
        manifest = Manifest.from_json_bytes(body.encode())
        assert {row[0] for row in edges} == manifest.chunk_digests()

    rows = {
        digest: (int(stored_size), pending)
        for digest, stored_size, pending in deployment.sql(
            "SELECT digest, stored_size, coalesce(gc_pending_since::text, '') FROM chunks"
        )
    }
    assert all(pending == "" for _, pending in rows.values())
    keys = deployment.bucket_keys()
    assert len(keys) == len(set(keys)), "a key listed twice"
    assert sorted(keys) == sorted(chunk_key(d) for d in rows)
    referenced = {row[0] for row in deployment.sql("SELECT chunk_digest FROM manifest_chunks")}
    assert referenced <= rows.keys()
    unread = sorted(rows.keys() - deployment.verified)
    for digest, blob in zip(
        unread, deployment.objects([chunk_key(d) for d in unread]), strict=True
    ):
        assert len(blob) == rows[digest][0], digest
        if digest in referenced:
            decode_chunk(blob, digest)  # raises unless the bytes are this chunk's
            deployment.verified.add(digest)


def assert_stateless(deployment: Deployment) -> None:
    """The replicas wrote nothing to their data directories: no index, no objects."""
    for replica in deployment.replicas:
        leftovers = [p for p in replica.data.rglob("*") if p.is_file()]
        assert leftovers == [], f"replica {replica.url} keeps local state: {leftovers}"
        assert not (replica.data / "objects").exists()


def synthetic_model(root: Path, seed: int, shared: bytes = b"") -> Path:
    """A small model directory: two random weight files (plus ``shared`` if given)."""
    root.mkdir(parents=True)
    rng = random.Random(seed)  # noqa: S311 - a seeded model for reproducible tests
    (root / "config.json").write_text(f'{{"seed": {seed}}}')
    (root / "model.bin").write_bytes(rng.randbytes(300_000))
    (root / "extra.bin").write_bytes(rng.randbytes(40_000))
    if shared:
        (root / "shared.bin").write_bytes(shared)
    return root


# --- tests ------------------------------------------------------------------------------


def test_push_through_one_replica_pull_through_the_other(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The real model: base through A, pulled through B; its fine-tune the other way."""
    base, tuned = base_model(), variant("finetune")
    pushed = node(deployment.a, tmp_path).push(base, "scale/minilm@base")
    assert pushed.bytes_new == pushed.bytes_total

    out = tmp_path / "base-via-b"
    pulled = node(deployment.b, tmp_path).pull("scale/minilm@base", out)
    assert pulled.manifest == pushed.manifest
    assert_same_tree(base, out)

    # B knows every chunk A stored: only the changed tensors travel.
    tuned_push = node(deployment.b, tmp_path).push(tuned, "scale/minilm@finetune")
    assert 0 < tuned_push.bytes_new < pushed.bytes_total / 2
    out = tmp_path / "finetune-via-a"
    pulled = node(deployment.a, tmp_path).pull("scale/minilm@finetune", out)
    assert pulled.manifest == tuned_push.manifest
    assert_same_tree(tuned, out)

    assert tag_target(deployment, "scale/minilm", "base") == pushed.manifest
    assert tag_target(deployment, "scale/minilm", "finetune") == tuned_push.manifest


def test_concurrent_pushes_of_different_models(deployment: Deployment, tmp_path: Path) -> None:
    """Four models at once, two through each replica; all share one file's chunks."""
    shared = os.urandom(200_000)
    models = [synthetic_model(tmp_path / f"m{i}", seed=i, shared=shared) for i in range(4)]
    replicas = [deployment.a, deployment.b] * 2

    def pusher(i: int) -> Callable[[], PushResult]:
        return lambda: node(replicas[i], tmp_path).push(models[i], f"scale/diff-{i}@v1")

    results = at_once(*(pusher(i) for i in range(4)))

    for i, result in enumerate(results):
        assert tag_target(deployment, f"scale/diff-{i}", "v1") == result.manifest
        assert_pulls_everywhere(
            deployment, f"scale/diff-{i}@v1", models[i], tmp_path, result.manifest
        )
    assert len({r.manifest for r in results}) == 4


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_pushes_of_the_same_model(
    deployment: Deployment, tmp_path: Path, round_: int
) -> None:
    """The same directory pushed through A and B at the same instant, from two nodes."""
    model = synthetic_model(tmp_path / "same", seed=1000 + round_)
    ref = f"scale/same-{round_}@v1"
    via_a, via_b = at_once(
        lambda: node(deployment.a, tmp_path).push(model, ref),
        lambda: node(deployment.b, tmp_path).push(model, ref),
    )
    assert via_a.manifest == via_b.manifest
    # Between them the two nodes uploaded every chunk at least once (both, if they raced).
    assert via_a.chunks_total == via_b.chunks_total
    assert via_a.chunks_new + via_b.chunks_new >= via_a.chunks_total

    repository = ref.split("@")[0]
    assert tag_target(deployment, repository, "v1") == via_a.manifest
    rows = deployment.sql(
        "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id"  # noqa: S608 - the test's own repository name
        f" WHERE r.name = '{repository}'"
    )
    assert rows == [[via_a.manifest]]  # one manifest row, not one per replica
    chunks = {
        row[0]
        for row in deployment.sql(
            "SELECT mc.chunk_digest FROM manifest_chunks mc"  # noqa: S608 - a digest the registry returned (blake3:<hex>)
            " JOIN manifests m ON m.id = mc.manifest_id"
            f" WHERE m.digest = '{via_a.manifest}'"
        )
    }
    assert len(chunks) == via_a.chunks_total
    keys = deployment.bucket_keys()
    assert all(keys.count(chunk_key(d)) == 1 for d in chunks)
    assert_pulls_everywhere(deployment, ref, model, tmp_path, via_a.manifest)
