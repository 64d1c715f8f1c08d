"""``GET /v1/repositories``."""

from __future__ import annotations

from tests.server.server_support import Api


def test_empty(api: Api) -> None:
    r = api.http.get("/v1/repositories")
    assert r.status_code == 200
    assert r.json() == {"repositories": []}


def test_lists_names_and_tags(api: Api) -> None:
    m = api.push("zeta", ("f", b"1"), tag="latest")
    api.push("team/alpha", ("f", b"2"), tag=None)
    api.http.put("/v1/repositories/zeta/tags/fp16", json={"digest": m.digest})
    repos = api.http.get("/v1/repositories").json()["repositories"]
    assert [(r["name"], r["tags"]) for r in repos] == [
        ("team/alpha", []),
        ("zeta", ["fp16", "latest"]),
    ]
    assert all(r["updated_at"].endswith("Z") for r in repos)
