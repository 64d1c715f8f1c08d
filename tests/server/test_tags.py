"""``/v1/repositories/{name}/tags``: move, read, delete, list."""

from __future__ import annotations

import pytest

from tests.server.server_support import TEST_LIMITS, Api, assert_error
from wreg.core.digest import digest_bytes


def test_put_get_list_delete(api: Api) -> None:
    m1 = api.push("team/model", ("a.bin", b"one"), tag="latest")
    m2 = api.push("team/model", ("a.bin", b"two"), tag=None)

    r = api.http.put("/v1/repositories/team/model/tags/v2", json={"digest": m2.digest})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "team/model"
    assert body["tag"] == "v2"
    assert body["digest"] == m2.digest
    assert body["updated_at"].endswith("Z")

    assert api.http.get("/v1/repositories/team/model/tags/v2").json() == body
    r = api.http.get("/v1/repositories/team/model/tags")
    assert r.status_code == 200
    listed = r.json()
    assert listed["name"] == "team/model"
    assert [(t["tag"], t["digest"]) for t in listed["tags"]] == [
        ("latest", m1.digest),
        ("v2", m2.digest),
    ]

    r = api.http.delete("/v1/repositories/team/model/tags/v2")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(api.http.get("/v1/repositories/team/model/tags/v2"), 404, "TAG_UNKNOWN")
    # The manifest survives its tag.
    r = api.http.get(f"/v1/repositories/team/model/manifests/{m2.digest}")
    assert r.status_code == 200


def test_move_tag(api: Api) -> None:
    m1 = api.push("model", ("f", b"one"), tag="latest")
    m2 = api.push("model", ("f", b"two"), tag=None)
    before = api.http.get("/v1/repositories/model/tags/latest").json()
    assert before["digest"] == m1.digest
    r = api.http.put("/v1/repositories/model/tags/latest", json={"digest": m2.digest})
    assert r.json()["digest"] == m2.digest
    assert r.json()["updated_at"] >= before["updated_at"]
    r = api.http.get("/v1/repositories/model/manifests/latest")
    assert r.headers["wreg-manifest-digest"] == m2.digest


def test_tag_needs_a_manifest_of_the_same_repository(api: Api) -> None:
    other = api.push("other", ("f", b"x"))
    api.push("model", ("f", b"y"))
    r = api.http.put("/v1/repositories/model/tags/v1", json={"digest": other.digest})
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = api.http.put("/v1/repositories/model/tags/v1", json={"digest": digest_bytes(b"unknown")})
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_unknown_repository(api: Api) -> None:
    digest = digest_bytes(b"x")
    r = api.http.put("/v1/repositories/nobody/tags/v1", json={"digest": digest})
    assert_error(r, 404, "NAME_UNKNOWN")
    assert_error(api.http.get("/v1/repositories/nobody/tags/v1"), 404, "NAME_UNKNOWN")
    assert_error(api.http.get("/v1/repositories/nobody/tags"), 404, "NAME_UNKNOWN")
    assert_error(api.http.delete("/v1/repositories/nobody/tags/v1"), 404, "NAME_UNKNOWN")


def test_delete_unknown_tag(api: Api) -> None:
    api.push("model", ("f", b"x"))
    assert_error(api.http.delete("/v1/repositories/model/tags/nope"), 404, "TAG_UNKNOWN")


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"[]", b'{"digest": 1}', b'{"tag": "x"}', b'{"digest": "x", "more": 1}'],
)
def test_malformed_body(api: Api, body: bytes) -> None:
    api.push("model", ("f", b"x"))
    r = api.http.put("/v1/repositories/model/tags/v1", content=body)
    assert_error(r, 400, "BODY_INVALID")


def test_invalid_digest_in_body(api: Api) -> None:
    api.push("model", ("f", b"x"))
    r = api.http.put("/v1/repositories/model/tags/v1", json={"digest": "sha256:abc"})
    assert_error(r, 400, "DIGEST_INVALID")


def test_oversized_body(api: Api) -> None:
    api.push("model", ("f", b"x"))
    pad = "x" * TEST_LIMITS["max_json_body"]
    r = api.http.put("/v1/repositories/model/tags/v1", json={"digest": pad})
    assert_error(r, 413, "BODY_TOO_LARGE")


@pytest.mark.parametrize("tag", ["-x", ".x", "blake3", "blake3:abc", "a%20b", "x" * 129])
def test_invalid_tags(api: Api, tag: str) -> None:
    manifest = api.push("model", ("f", b"x"))
    url = f"/v1/repositories/model/tags/{tag}"
    assert_error(api.http.put(url, json={"digest": manifest.digest}), 400, "TAG_INVALID")
    assert_error(api.http.get(url), 400, "TAG_INVALID")
    assert_error(api.http.delete(url), 400, "TAG_INVALID")


@pytest.mark.parametrize("name", ["Model", "a/b/c", "a..b", "-x"])
def test_invalid_names(api: Api, name: str) -> None:
    digest = digest_bytes(b"x")
    url = f"/v1/repositories/{name}/tags/v1"
    assert_error(api.http.put(url, json={"digest": digest}), 400, "NAME_INVALID")
    assert_error(api.http.get(url), 400, "NAME_INVALID")
    assert_error(api.http.delete(url), 400, "NAME_INVALID")
    assert_error(api.http.get(f"/v1/repositories/{name}/tags"), 400, "NAME_INVALID")
