"""``/v1/repositories/{name}/manifests/{reference}``: commit and fetch."""

from __future__ import annotations

import json

import pytest

from tests.server.server_support import (
    TEST_LIMITS,
    Api,
    Chunk,
    assert_error,
    file_doc,
    file_of,
    raw_manifest,
)
from wreg.core.digest import digest_bytes
from wreg.core.manifest import Manifest, canonical_json
from wreg.core.mediatypes import MANIFEST_MEDIA_TYPE
from wreg_server.settings import ServerSettings


@pytest.fixture
def settings(settings: ServerSettings) -> ServerSettings:
    """Manifests here are built of chunks uploaded through one repository and committed
    to others: the global namespace allows that (a repository's own rules for which
    chunks a push may reference are ``test_tenancy.py``'s)."""
    return settings.model_copy(update={"chunk_namespace": "global"})


def stored_manifest(api: Api, *datas: bytes, metadata: dict[str, object] | None = None) -> Manifest:
    entries = []
    for i, data in enumerate(datas):
        chunk = Chunk.of(data)
        api.upload(chunk)
        entries.append(file_of(f"dir/file{i}.bin", chunk))
    return Manifest.build(entries, metadata)


def test_commit_and_fetch_by_tag_and_digest(api: Api) -> None:
    manifest = stored_manifest(api, b"a" * 100, b"b" * 200, metadata={"author": "zoë"})
    r = api.commit("team/model", manifest, tag="v1")
    assert r.status_code == 201
    assert r.json() == {"name": "team/model", "digest": manifest.digest, "tag": "v1"}

    for reference in ("v1", manifest.digest):
        r = api.http.get(f"/v1/repositories/team/model/manifests/{reference}")
        assert r.status_code == 200
        assert r.content == manifest.to_json_bytes()
        assert r.headers["content-type"] == MANIFEST_MEDIA_TYPE
        assert r.headers["wreg-manifest-digest"] == manifest.digest
        assert Manifest.from_json_bytes(r.content) == manifest
    by_digest = api.http.get(f"/v1/repositories/team/model/manifests/{manifest.digest}")
    assert "immutable" in by_digest.headers["cache-control"]
    by_tag = api.http.get("/v1/repositories/team/model/manifests/v1")
    assert by_tag.headers["cache-control"] == "public, no-cache"  # auth off: anyone may read


def test_recommit_is_idempotent_and_moves_tag(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    assert api.commit("model", manifest).status_code == 201
    r = api.commit("model", manifest, tag="stable")
    assert r.status_code == 200
    assert r.json()["tag"] == "stable"
    r = api.http.get("/v1/repositories/model/manifests/stable")
    assert r.headers["wreg-manifest-digest"] == manifest.digest


def test_commit_without_tag_leaves_tags_alone(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    r = api.commit("model", manifest)
    assert r.status_code == 201
    assert r.json()["tag"] is None
    assert_error(api.http.get("/v1/repositories/model/manifests/latest"), 404, "TAG_UNKNOWN")


def test_commit_moves_existing_tag(api: Api) -> None:
    first = stored_manifest(api, b"1" * 10)
    second = stored_manifest(api, b"2" * 10)
    api.commit("model", first, tag="latest")
    api.commit("model", second, tag="latest")
    r = api.http.get("/v1/repositories/model/manifests/latest")
    assert r.headers["wreg-manifest-digest"] == second.digest
    # The old manifest stays reachable by digest.
    assert api.http.get(f"/v1/repositories/model/manifests/{first.digest}").status_code == 200


def test_empty_manifest(api: Api) -> None:
    manifest = Manifest.build([])
    assert api.commit("empty", manifest, tag="latest").status_code == 201


def test_manifests_are_per_repository(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    api.commit("a/one", manifest)
    api.commit("a/two", stored_manifest(api, b"y" * 10))
    r = api.http.get(f"/v1/repositories/a/two/manifests/{manifest.digest}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_digest_mismatch(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    other = digest_bytes(b"other")
    r = api.http.put(f"/v1/repositories/model/manifests/{other}", content=manifest.to_json_bytes())
    error = assert_error(r, 400, "DIGEST_MISMATCH")
    assert error["detail"] == {"expected": other, "actual": manifest.digest}
    assert api.http.get("/v1/repositories").json() == {"repositories": []}


def test_non_canonical_body(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    pretty = json.dumps(manifest.to_json(), indent=2).encode()
    r = api.commit("model", pretty)
    assert_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"[]", b'{"schema":2,"files":[],"metadata":{}}', b'{"files":[],"schema":1,"x":1}',
     b"\xff"],
)  # fmt: skip
def test_malformed_manifest(api: Api, body: bytes) -> None:
    assert_error(api.commit("model", body), 400, "MANIFEST_INVALID")


def test_missing_chunks_are_listed(api: Api) -> None:
    present = Chunk.of(b"present" * 10)
    absent1, absent2 = Chunk.of(b"absent-1"), Chunk.of(b"absent-2")
    api.upload(present)
    manifest = Manifest.build(
        [file_of("a", present), file_of("b", absent1, present), file_of("c", absent2)]
    )
    r = api.commit("model", manifest, tag="latest")
    error = assert_error(r, 400, "MANIFEST_CHUNKS_MISSING")
    assert error["detail"] == {"missing": [absent1.digest, absent2.digest]}
    # Nothing of the failed commit is visible.
    assert api.http.get("/v1/repositories").json() == {"repositories": []}
    r = api.http.get(f"/v1/repositories/model/manifests/{manifest.digest}")
    assert_error(r, 404, "NAME_UNKNOWN")
    # Upload the rest and the same commit succeeds.
    api.upload(absent1)
    api.upload(absent2)
    assert api.commit("model", manifest, tag="latest").status_code == 201


def test_chunk_size_must_match_stored_chunk(api: Api) -> None:
    chunk = Chunk.of(b"x" * 100)
    api.upload(chunk)
    doc = file_doc("a", chunk)
    doc["size"] = 99
    doc["chunks"][0]["size"] = 99
    error = assert_error(api.commit("model", raw_manifest([doc])), 400, "MANIFEST_INVALID")
    assert chunk.digest in error["detail"]["sizes"]


@pytest.mark.parametrize(
    "paths",
    [["../x"], ["/etc/x"], ["a/../../b"], [""], ["a//b"], ["./a"], ["a/."], ["con.txt"],
     ["C:/x"], ["a\\b"], ["a\x00b"], ["dup", "dup"], ["Dup", "dup"], ["a", "a/b"]],
)  # fmt: skip
def test_unsafe_paths(api: Api, paths: list[str]) -> None:
    chunk = Chunk.of(b"x" * 10)
    api.upload(chunk)
    body = raw_manifest([file_doc(p, chunk) for p in paths])
    assert_error(api.commit("model", body), 400, "PATH_UNSAFE")
    assert api.http.get("/v1/repositories").json() == {"repositories": []}


@pytest.mark.parametrize(
    "name", ["Team/Model", "a/b/c", "-a", "a-", "a..b", "a/", "UPPER", "a_b/ c", "x" * 256]
)
def test_invalid_repository_names(api: Api, name: str) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    assert_error(api.commit(name, manifest), 400, "NAME_INVALID")
    r = api.http.get(f"/v1/repositories/{name}/manifests/latest")
    assert_error(r, 400, "NAME_INVALID")


def test_empty_repository_name(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    r = api.http.put(
        f"/v1/repositories//manifests/{manifest.digest}", content=manifest.to_json_bytes()
    )
    assert_error(r, 400, "NAME_INVALID")


def test_invalid_digest_in_url(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    r = api.http.put("/v1/repositories/model/manifests/latest", content=manifest.to_json_bytes())
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("tag", ["", "-x", ".x", "blake3", "a b", "x" * 129, "a/b"])
def test_invalid_tag_parameter(api: Api, tag: str) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    assert_error(api.commit("model", manifest, tag=tag), 400, "TAG_INVALID")


def test_oversized_manifest(api: Api) -> None:
    body = raw_manifest([], {"pad": "x" * TEST_LIMITS["max_manifest_bytes"]})
    assert_error(api.commit("model", body), 413, "MANIFEST_TOO_LARGE")


def test_unknown_references(api: Api) -> None:
    manifest = stored_manifest(api, b"x" * 10)
    api.commit("model", manifest, tag="v1")
    unknown = digest_bytes(b"nope")
    get = api.http.get
    assert_error(get("/v1/repositories/nobody/manifests/v1"), 404, "NAME_UNKNOWN")
    assert_error(get(f"/v1/repositories/model/manifests/{unknown}"), 404, "MANIFEST_UNKNOWN")
    assert_error(get("/v1/repositories/model/manifests/v2"), 404, "TAG_UNKNOWN")
    assert_error(get("/v1/repositories/model/manifests/blake3:zz"), 400, "DIGEST_INVALID")
    assert_error(get("/v1/repositories/model/manifests/-bad"), 400, "TAG_INVALID")


def test_schema_2_file_digests_must_be_chunk_list_identities(api: Api) -> None:
    """One content, one digest, and a file whose name vouches for its chunk list: a
    schema-2 manifest whose file digest is anything else (the content hash of schema 1,
    say) is refused; the same file in schema 1 is accepted."""
    chunk = Chunk.of(b"identity" * 100)
    api.upload(chunk)
    doc = file_doc("w.bin", chunk)  # digest: the content's blake3, as in schema 1
    lying = canonical_json({"schema": 2, "files": [doc], "metadata": {}})
    error = assert_error(api.commit("team/model", lying), 400, "MANIFEST_INVALID")
    assert "identity of its chunk list" in error["message"]
    assert api.commit("team/model", raw_manifest([doc])).status_code == 201
    honest = Manifest.build([file_of("w.bin", chunk)])
    assert honest.schema == 2
    assert api.commit("team/model", honest).status_code == 201
