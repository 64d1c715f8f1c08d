"""Two tenants on one registry (``domain/access.py``), on both deployments.

``team-b`` holds a private model whose chunk ``S`` is stored nowhere else. Through its
own repositories, a ``team-a`` token must learn nothing of ``S`` — not its bytes (GET),
not its existence (HEAD, conditional GET, the missing query, an upload's answer) — and
cannot claim it in a manifest of its own without uploading the bytes. Within one team,
and for a token that may pull ``team-b``, all of it works. Under
``WREG_CHUNK_NAMESPACE=global`` visibility is global again, by design.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.server.server_support import Chunk, assert_error, file_of, running
from tests.server.test_auth import Registry, make_token, start
from tests.server.test_gc import age, run_gc, sql
from wreg import Client
from wreg.core.batch import encode_frames
from wreg.core.errors import AuthError
from wreg.core.manifest import Manifest
from wreg_server.app import create_app
from wreg_server.db.models import ChunkClaim
from wreg_server.settings import ServerSettings

SECRET = b"team b's private weights, stored nowhere else"
NEVER = Chunk.of(b"no one ever uploaded this")


@pytest.fixture
def registry(settings: ServerSettings) -> Iterator[Registry]:
    for reg in start(settings):
        reg.tokens["team-b-push"] = make_token(reg.settings, "team-b-push", "push:team-b/*")
        with reg.client("team-b-push") as b:
            secret = Chunk.of(SECRET)
            chunks = "/v1/repositories/team-b/private/chunks"
            assert b.put(f"{chunks}/{secret.digest}", content=secret.encoded).status_code == 201
            manifest = Manifest.build([file_of("w.bin", secret)])
            r = b.put(
                f"/v1/repositories/team-b/private/manifests/{manifest.digest}",
                content=manifest.to_json_bytes(),
                params={"tag": "v1"},
            )
            assert r.status_code == 201, r.text
        yield reg


def chunk_url(repository: str, chunk: Chunk) -> str:
    return f"/v1/repositories/{repository}/chunks/{chunk.digest}"


def same_answer(a: httpx.Response, b: httpx.Response, a_digest: str, b_digest: str) -> None:
    """Two answers that differ only in the digest they name (and the request id)."""
    assert a.status_code == b.status_code, (a.status_code, b.status_code)
    strip = {"x-request-id", "date", "content-length"}
    assert {k: v for k, v in a.headers.items() if k not in strip} == {
        k: v for k, v in b.headers.items() if k not in strip
    }
    assert a.content.replace(a_digest.encode(), b"D") == b.content.replace(b_digest.encode(), b"D")


def commit(c: httpx.Client, name: str, *chunks: Chunk) -> httpx.Response:
    manifest = Manifest.build([file_of(f"f{i}", x) for i, x in enumerate(chunks)])
    return c.put(
        f"/v1/repositories/{name}/manifests/{manifest.digest}",
        content=manifest.to_json_bytes(),
        params={"tag": "v1"},
    )


def test_a_chunk_outside_the_repository_reads_like_one_that_does_not_exist(
    registry: Registry,
) -> None:
    secret = Chunk.of(SECRET)
    with registry.client("team-a-push") as a:
        for method in ("GET", "HEAD"):
            hidden = a.request(method, chunk_url("team-a/m", secret))
            absent = a.request(method, chunk_url("team-a/m", NEVER))
            same_answer(hidden, absent, secret.digest, NEVER.digest)
            assert hidden.status_code == 404
        etag = {"if-none-match": f'"{secret.digest}"'}
        hidden = a.get(chunk_url("team-a/m", secret), headers=etag)
        assert_error(hidden, 404, "CHUNK_UNKNOWN")
        # team-b's own repository is refused by scope, before any chunk is looked at.
        assert_error(a.get(chunk_url("team-b/private", secret)), 403, "DENIED")
    with registry.client("team-b-push") as b:
        r = b.get(chunk_url("team-b/private", secret))
        assert (r.status_code, r.content) == (200, secret.encoded)
        assert b.head(chunk_url("team-b/private", secret)).status_code == 200
        assert b.get(chunk_url("team-b/private", secret), headers=etag).status_code == 304
        # Within one team, through a repository that does not hold it: not readable either.
        assert_error(b.get(chunk_url("team-b/other", secret)), 404, "CHUNK_UNKNOWN")
    with registry.client("reader") as reader:  # pull:* reads it where it lives
        assert reader.get(chunk_url("team-b/private", secret)).status_code == 200


def test_a_batched_fetch_reads_like_single_gets(registry: Registry) -> None:
    """``POST .../chunks/fetch``: a chunk outside the repository answers exactly like one
    that does not exist, whatever else the batch holds; the owner reads it."""
    secret, own = Chunk.of(SECRET), Chunk.of(b"team a weights")

    def fetch(c: httpx.Client, name: str, *chunks: Chunk) -> httpx.Response:
        url = f"/v1/repositories/{name}/chunks/fetch"
        return c.post(url, json={"digests": [x.digest for x in chunks]})

    with registry.client("team-a-push") as a:
        hidden, absent = fetch(a, "team-a/m", own, secret), fetch(a, "team-a/m", own, NEVER)
        same_answer(hidden, absent, secret.digest, NEVER.digest)
        error = assert_error(hidden, 404, "CHUNK_UNKNOWN")
        assert error["detail"] == {"digests": [secret.digest]}
        assert fetch(a, "team-a/m", own).status_code == 200
        assert_error(fetch(a, "team-b/private", secret), 403, "DENIED")
    with registry.client("team-b-push") as b:
        r = fetch(b, "team-b/private", secret)
        assert r.status_code == 200
        assert r.content.endswith(secret.encoded)
    with registry.client("team-a-reader") as reader:  # pull only: a fetch is a read
        assert fetch(reader, "team-a/m", own).status_code == 200


def test_a_batched_upload_proves_possession(registry: Registry) -> None:
    """Chunks sent in an upload batch through ``R`` are claimed for ``R``, as singles are."""
    secret = Chunk.of(SECRET)
    with registry.client("team-a-push") as a:
        body = encode_frames([(secret.digest, secret.encoded)])
        r = a.post("/v1/repositories/team-a/copy/chunks/upload", content=body)
        assert r.status_code == 201, r.text
        query = {"digests": [secret.digest]}
        r = a.post("/v1/repositories/team-a/copy/chunks/missing", json=query)
        assert r.json() == {"missing": []}
        assert_error(
            a.post("/v1/repositories/team-b/private/chunks/upload", content=body), 403, "DENIED"
        )


def test_the_missing_query_reports_invisible_chunks_missing(registry: Registry) -> None:
    secret, own = Chunk.of(SECRET), Chunk.of(b"team a weights")
    query = {"digests": [secret.digest, own.digest, NEVER.digest]}
    with registry.client("team-a-push") as a:
        r = a.post("/v1/repositories/team-a/new/chunks/missing", json=query)
        assert r.json() == {"missing": [secret.digest, NEVER.digest]}  # own: in team-a/m
    with registry.client("mixed") as mixed:  # push:team-a/*, pull:team-b/*
        r = mixed.post("/v1/repositories/team-a/new/chunks/missing", json=query)
        assert r.json() == {"missing": [NEVER.digest]}
    with registry.client("team-b-push") as b:
        r = b.post("/v1/repositories/team-b/new/chunks/missing", json=query)
        assert r.json() == {"missing": [own.digest, NEVER.digest]}


def test_an_upload_is_answered_like_a_first_upload(registry: Registry) -> None:
    secret, fresh = Chunk.of(SECRET), Chunk.of(b"a chunk no one has yet")
    with registry.client("team-a-push") as a:
        known = a.put(chunk_url("team-a/x", secret), content=secret.encoded)
        new = a.put(chunk_url("team-a/x", fresh), content=fresh.encoded)
    assert known.status_code == new.status_code == 201
    strip = {"x-request-id", "date", "content-length"}
    assert {k: v for k, v in known.headers.items() if k not in strip} == {
        k: v for k, v in new.headers.items() if k not in strip
    }
    for r, chunk in ((known, secret), (new, fresh)):
        assert r.json() == {
            "digest": chunk.digest,
            "size": len(chunk.raw),
            "stored_size": len(chunk.encoded),  # what was sent, not what is stored
        }


def test_claiming_another_teams_chunk_needs_its_bytes(registry: Registry) -> None:
    secret = Chunk.of(SECRET)
    with registry.client("team-a-push") as a:
        r = commit(a, "team-a/stolen", secret)
        error = assert_error(r, 400, "MANIFEST_CHUNKS_MISSING")
        assert error["detail"]["missing"] == [secret.digest]
        # Bytes uploaded through another repository prove nothing for this one.
        assert a.put(chunk_url("team-a/elsewhere", secret), content=secret.encoded).is_success
        assert_error(commit(a, "team-a/stolen", secret), 400, "MANIFEST_CHUNKS_MISSING")
        assert_error(a.get(chunk_url("team-a/elsewhere", secret)), 404, "CHUNK_UNKNOWN")
        # Proof of possession: upload the bytes through the repository, then commit.
        assert a.put(chunk_url("team-a/stolen", secret), content=secret.encoded).is_success
        assert commit(a, "team-a/stolen", secret).status_code == 201
        r = a.get(chunk_url("team-a/stolen", secret))
        assert (r.status_code, r.content) == (200, secret.encoded)
    # GC drops the claim the manifest now proves, and keeps the one it does not.
    claims = select(ChunkClaim.repository, ChunkClaim.chunk_digest)
    assert ("team-a/stolen", secret.digest) in sql(registry.settings, claims)
    run_gc(registry.settings)
    assert sorted(sql(registry.settings, claims)) == [("team-a/elsewhere", secret.digest)]


def test_a_token_that_may_pull_the_owner_reuses_without_uploading(registry: Registry) -> None:
    secret = Chunk.of(SECRET)
    with registry.client("mixed") as mixed:
        assert commit(mixed, "team-a/reused", secret).status_code == 201
        assert mixed.get(chunk_url("team-a/reused", secret)).content == secret.encoded
    with registry.client("team-a-push") as a:  # and now team-a reads it through team-a
        assert a.get(chunk_url("team-a/reused", secret)).content == secret.encoded


def test_deleting_the_manifest_ends_reads_through_its_repository(registry: Registry) -> None:
    secret = Chunk.of(SECRET)
    manifest = Manifest.build([file_of("w.bin", secret)])
    with registry.client("team-b-push") as b:
        assert b.get(chunk_url("team-b/private", secret)).status_code == 200  # set loaded
        r = b.delete(f"/v1/repositories/team-b/private/manifests/{manifest.digest}")
        assert r.status_code == 204
        assert_error(b.get(chunk_url("team-b/private", secret)), 404, "CHUNK_UNKNOWN")


def test_gc_drops_claims_with_their_chunks(registry: Registry) -> None:
    orphan = Chunk.of(b"uploaded, never committed")
    with registry.client("team-a-push") as a:
        assert a.put(chunk_url("team-a/x", orphan), content=orphan.encoded).is_success
    age(registry.settings, orphan, by=timedelta(days=2))
    assert run_gc(registry.settings).chunks_deleted == 1
    assert sql(registry.settings, select(ChunkClaim.chunk_digest)) == []


def test_another_replica_stops_serving_a_deleted_manifest_within_the_ttl(
    settings: ServerSettings,
) -> None:
    """Replica 1 caches team-b's chunk set; replica 2 deletes the manifest; replica 1
    refuses the chunk once ``WREG_AUTH_CACHE_SECONDS`` have passed."""
    for reg in start(settings, auth_cache_seconds=0.5):
        with running(create_app(reg.settings)) as other, reg.client("admin") as one:
            chunk = reg.b.files[0].chunks[0].digest
            url = f"/v1/repositories/team-b/m/chunks/{chunk}"
            assert one.get(url).status_code == 200
            headers = {"Authorization": f"Bearer {reg.tokens['admin']}"}
            gone = httpx.delete(
                f"{other}/v1/repositories/team-b/m/manifests/{reg.b.digest}", headers=headers
            )
            assert gone.status_code == 204
            deadline = time.monotonic() + 10
            while one.get(url).status_code == 200:
                assert time.monotonic() < deadline, "still served 10 s after the delete"
                time.sleep(0.1)
            assert_error(one.get(url), 404, "CHUNK_UNKNOWN")


def test_global_routes_are_not_served_in_the_repository_namespace(registry: Registry) -> None:
    secret = Chunk.of(SECRET)
    with registry.client("team-a-push") as a:
        for method in ("GET", "HEAD"):
            assert a.request(method, f"/v1/chunks/{secret.digest}").status_code == 404
        assert a.post("/v1/chunks/missing", json={"digests": []}).status_code == 404


def test_the_global_namespace_shares_every_chunk(settings: ServerSettings) -> None:
    """Single-tenant by choice: any token may read or reuse any chunk by digest."""
    secret = Chunk.of(SECRET)
    for reg in start(settings, chunk_namespace="global"):
        token = make_token(reg.settings, "b", "push:team-b/*")
        with httpx.Client(base_url=reg.url, headers={"Authorization": f"Bearer {token}"}) as b:
            assert b.put(f"/v1/chunks/{secret.digest}", content=secret.encoded).is_success
        with reg.client("team-a-push") as a:
            assert a.get(f"/v1/chunks/{secret.digest}").content == secret.encoded
            assert a.get(chunk_url("team-a/m", secret)).content == secret.encoded
            r = a.post("/v1/chunks/missing", json={"digests": [secret.digest]})
            assert r.json() == {"missing": []}
            r = a.post(
                "/v1/repositories/team-a/m/chunks/missing", json={"digests": [secret.digest]}
            )
            assert r.json() == {"missing": []}
            assert commit(a, "team-a/reuse", secret).status_code == 201


def test_the_client_pushes_and_pulls_per_tenant(registry: Registry, tmp_path: Path) -> None:
    """Through the SDK: team-a pushing bytes team-b already stores uploads them (proof of
    possession), then owns them; team-a cannot pull team-b's model."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(SECRET)
    a = Client(registry.url, token=registry.tokens["team-a-push"], cache_dir=tmp_path / "ca")
    pushed = a.push(model, "team-a/copy@v1")
    assert pushed.chunks_new == pushed.chunks_total == 1
    assert a.push(model, "team-a/copy@v2").chunks_new == 0  # now its own
    pulled = a.pull("team-a/copy@v1", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == SECRET
    assert pulled.bytes_total == len(SECRET)
    with pytest.raises(AuthError) as info:
        a.pull("team-b/private@v1", tmp_path / "out-b")
    assert info.value.code.name == "DENIED"
