"""Retention policies (``domain/retention.py``): CRUD over the API and the CLI, the plan,
and GC applying them, on both deployments, with real bytes of a real model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.server.server_support import (
    Api,
    Chunk,
    assert_error,
    error_of,
    file_of,
    running,
    with_store,
)
from tests.server.test_auth import in_index, make_token
from wreg.core.errors import WregError
from wreg.core.manifest import Manifest
from wreg.testing import realdata
from wreg_server.app import create_app
from wreg_server.cli import app as cli
from wreg_server.db.session import create_engine, create_sessionmaker
from wreg_server.domain import retention
from wreg_server.domain.gc import GcResult, collect
from wreg_server.domain.layout import chunk_key
from wreg_server.objectstore import ObjectStore, from_settings
from wreg_server.settings import ServerSettings

ZERO = timedelta(0)
REPO = "team/ckpt"
SLICE = 64 * 1024


@pytest.fixture(scope="module")
def weights() -> tuple[bytes, list[bytes]]:
    """The real model's config (shared by every checkpoint) and ten distinct 64 KiB
    slices of its weights (one per checkpoint)."""
    base = realdata.base_model()
    config = (base / "config.json").read_bytes()
    with (base / "model.safetensors").open("rb") as f:
        f.seek(1 << 20)
        slices = [f.read(SLICE) for _ in range(10)]
    assert len(set(slices)) == 10
    return config, slices


def run_gc(settings: ServerSettings, **kwargs: Any) -> GcResult:
    async def main() -> GcResult:
        engine = create_engine(settings.database_url)
        store = from_settings(settings)
        try:
            return await collect(create_sessionmaker(engine), store, **kwargs)
        finally:
            await store.close()
            await engine.dispose()

    return asyncio.run(main())


def stored_keys(settings: ServerSettings) -> set[str]:
    async def keys(store: ObjectStore) -> set[str]:
        return {k async for k in store.list("chunks/")}

    return with_store(settings, keys)


def checkpoint(api: Api, name: str, config: bytes, weights: bytes, tag: str | None) -> Manifest:
    shared, unique = Chunk.of(config), Chunk.of(weights)
    for chunk in (shared, unique):
        api.upload(chunk, name)
    manifest = Manifest.build([file_of("config.json", shared), file_of("model.bin", unique)])
    r = api.commit(name, manifest, tag)
    assert r.status_code in (200, 201), r.text
    return manifest


def tag(api: Api, name: str, tag_name: str, manifest: Manifest) -> None:
    r = api.http.put(f"/v1/repositories/{name}/tags/{tag_name}", json={"digest": manifest.digest})
    assert r.status_code in (200, 201), r.text


def tags_of(api: Api, name: str) -> dict[str, str]:
    r = api.http.get(f"/v1/repositories/{name}/tags")
    assert r.status_code == 200, r.text
    return {t["tag"]: t["digest"] for t in r.json()["tags"]}


def url(name: str = REPO) -> str:
    return f"/v1/repositories/{name}/retention"


def at(seconds: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


# -- the rules, without I/O ------------------------------------------------------------


def test_decide_applies_the_documented_rules() -> None:
    policy = retention.Policy.of(REPO, 2, "step-*", ["release-*"])
    found = [
        retention.Tagged(1, "d1", at(1), ("step-1", "release-1")),
        retention.Tagged(2, "d2", at(2), ("step-2", "prod")),
        retention.Tagged(3, "d3", at(3), ("step-3",)),
        retention.Tagged(4, "d4", at(4), ("step-4",)),
        retention.Tagged(7, "d5", at(4), ("step-5", "step-5b")),  # same time, later id
        retention.Tagged(6, "d6", at(9), ("latest",)),  # no candidate
        retention.Tagged(8, "d7", at(0), ("STEP-0",)),  # case-sensitive: no candidate
    ]
    plan = retention.decide(policy, found)
    assert [(v.digest, v.reason) for v in plan.delete] == [("d3", "older than the newest")]
    assert [(v.digest, v.reason) for v in plan.keep] == [
        ("d5", "newest 2"),
        ("d4", "newest 2"),
        ("d2", "also tagged prod"),
        ("d1", "protected: release-1 matches release-*"),
    ]
    assert plan.untouched == 2


def test_policy_validation() -> None:
    ok = retention.Policy.of("a/b", 1, "step-?*", ["release-*", "prod", "prod"])
    assert ok.protect == ("release-*", "prod")
    bad: list[tuple[Any, ...]] = [
        ("a/b", 0, "step-*", []),
        ("a/b", retention.MAX_KEEP + 1, "step-*", []),
        ("a/b", True, "step-*", []),
        ("a/b", 1, "", []),
        ("a/b", 1, "step *", []),
        ("a/b", 1, "step-[0-9]", []),
        ("a/b", 1, "s" * 129, []),
        ("a/b", 1, "step-*", ["ok", "not ok"]),
        ("a/b", 1, "step-*", [f"p{i}" for i in range(retention.MAX_PROTECT + 1)]),
    ]
    for args in bad:
        with pytest.raises(WregError) as caught:
            retention.Policy.of(*args)
        assert caught.value.code.name == "BODY_INVALID", args
        assert "\n" not in str(caught.value)
    with pytest.raises(WregError) as caught:
        retention.Policy.of("Not A Name", 1, "step-*")
    assert caught.value.code.name == "NAME_INVALID"


# -- the admin API ---------------------------------------------------------------------


def test_api_policy_crud(api: Api) -> None:
    assert api.http.get(url()).json() == {"name": REPO, "policy": None}
    r = api.http.put(url(), json={"keep": 3, "match": "step-*", "protect": ["release-*"]})
    assert r.status_code == 200, r.text
    policy = r.json()["policy"]
    assert (policy["keep"], policy["match"], policy["protect"]) == (3, "step-*", ["release-*"])
    assert api.http.get(url()).json()["policy"] == policy
    # Replace: the protect list may be left out.
    r = api.http.put(url(), json={"keep": 5, "match": "ckpt-*"})
    assert r.json()["policy"]["protect"] == []
    assert r.json()["policy"]["keep"] == 5
    for body in (
        {"keep": 0, "match": "step-*"},
        {"keep": "3", "match": "step-*"},
        {"keep": 3, "match": "step *"},
        {"keep": 3, "match": "step-*", "protect": ["a b"]},
        {"keep": 3, "match": "step-*", "extra": 1},
        {"keep": 3},
    ):
        error = assert_error(api.http.put(url(), json=body), 400, "BODY_INVALID")
        assert "\n" not in error["message"], body
    deep = b"[" * 100_000 + b"]" * 100_000
    for raw in (deep, b'{"keep": 3, "match": "' + b"s" * 20_000 + b'"}', b"{"):
        r = api.http.put(url(), content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 413), r.text
        assert error_of(r)["code"] in ("BODY_INVALID", "BODY_TOO_LARGE")
    assert api.http.get(url()).json()["policy"]["keep"] == 5  # unchanged by the refusals
    # The plan of a repository nobody pushed to yet: the policy, nothing to do.
    plan = api.http.get(f"{url()}/plan").json()
    assert (plan["delete"], plan["keep"], plan["policy"]["match"]) == ([], [], "ckpt-*")
    assert api.http.delete(url()).status_code == 204
    assert api.http.delete(url()).status_code == 204  # idempotent
    assert api.http.get(url()).json()["policy"] is None
    assert api.http.get(f"{url()}/plan").json()["policy"] is None
    assert_error(api.http.get(url("Bad Name")), 400, "NAME_INVALID")


@pytest.fixture
def auth_registry(settings: ServerSettings) -> Iterator[tuple[str, dict[str, str]]]:
    s = settings.model_copy(update={"auth": "on"})
    with running(create_app(s)) as base:
        who = {
            "admin": make_token(s, "admin", "admin:*"),
            "team-admin": make_token(s, "team-admin", "admin:team/*"),
            "push": make_token(s, "pusher", "push:team/*"),
            "pull": make_token(s, "reader", "pull:*"),
            "other-admin": make_token(s, "other-admin", "admin:other/*"),
        }
        yield base, who


def test_api_needs_admin_on_the_repository(auth_registry: tuple[str, dict[str, str]]) -> None:
    base, who = auth_registry
    body = {"keep": 2, "match": "step-*"}
    requests = [
        ("PUT", url(), body),
        ("GET", url(), None),
        ("GET", f"{url()}/plan", None),
        ("DELETE", url(), None),
    ]
    for name in ("admin", "team-admin"):
        with Api(base) as api:
            api.http.headers["Authorization"] = f"Bearer {who[name]}"
            for method, path, json_body in requests:
                r = api.http.request(method, path, json=json_body)
                assert r.status_code < 300, (name, method, path, r.text)
    for name in ("push", "pull", "other-admin"):
        with Api(base) as api:
            api.http.headers["Authorization"] = f"Bearer {who[name]}"
            for method, path, json_body in requests:
                assert_error(api.http.request(method, path, json=json_body), 403, "DENIED")
    with Api(base) as api:
        for method, path, json_body in requests:
            assert_error(api.http.request(method, path, json=json_body), 401, "UNAUTHORIZED")
    # A cache in front must not serve these on a pull token's word (api/routes/authcheck.py).
    for name in ("pull", "admin"):
        with Api(base) as api:
            api.http.headers["Authorization"] = f"Bearer {who[name]}"
            for path in (url(), f"{url()}/plan"):
                headers = {"X-Original-Method": "GET", "X-Original-URI": path}
                assert api.http.get("/v1/auth/check", headers=headers).status_code == 403


# -- GC applies the policies -----------------------------------------------------------


def test_gc_keeps_the_newest_protected_and_otherwise_tagged(
    api: Api, settings: ServerSettings, weights: tuple[bytes, list[bytes]]
) -> None:
    config, slices = weights
    steps = [checkpoint(api, REPO, config, slices[i], f"step-{i + 1}") for i in range(5)]
    tag(api, REPO, "release-1", steps[0])
    tag(api, REPO, "prod", steps[1])
    untagged = checkpoint(api, REPO, config, slices[5], None)  # never touched by retention
    other = checkpoint(api, "team/other", config, slices[6], "step-1")  # no policy there
    r = api.http.put(url(), json={"keep": 2, "match": "step-*", "protect": ["release-*"]})
    assert r.status_code == 200, r.text

    # The plan: exactly step-3 goes; each kept one says why.
    plan = api.http.get(f"{url()}/plan").json()
    assert [(v["digest"], v["tags"]) for v in plan["delete"]] == [(steps[2].digest, ["step-3"])]
    assert [(v["digest"], v["reason"]) for v in plan["keep"]] == [
        (steps[4].digest, "newest 2"),
        (steps[3].digest, "newest 2"),
        (steps[1].digest, "also tagged prod"),
        (steps[0].digest, "protected: release-1 matches release-*"),
    ]

    # The dry run lists the same manifest and deletes nothing.
    before = stored_keys(settings)
    dry = run_gc(settings, grace=ZERO, dry_run=True)
    assert dry.manifests_deleted == 1
    assert [(g.repository, g.digest, g.tags) for g in dry.retention] == [
        (REPO, steps[2].digest, ("step-3",))
    ]
    assert json.loads(json.dumps(dry.to_json()))["retention"][0]["digest"] == steps[2].digest
    gone = Chunk.of(slices[2])
    assert (dry.chunks_deleted, dry.bytes_freed) == (1, len(gone.encoded))  # what step-3 frees
    assert stored_keys(settings) == before
    assert api.http.get(f"/v1/repositories/{REPO}/manifests/step-3").status_code == 200

    result = run_gc(settings, grace=ZERO)
    assert result.manifests_deleted == 1
    assert result.retention[0].digest == steps[2].digest
    assert result.chunks_deleted == 1  # step-3's weights; the config is shared
    assert tags_of(api, REPO) == {
        "step-1": steps[0].digest,
        "release-1": steps[0].digest,
        "step-2": steps[1].digest,
        "prod": steps[1].digest,
        "step-4": steps[3].digest,
        "step-5": steps[4].digest,
    }
    assert_error(
        api.http.get(f"/v1/repositories/{REPO}/manifests/{steps[2].digest}"),
        404,
        "MANIFEST_UNKNOWN",
    )
    assert chunk_key(gone.digest) not in stored_keys(settings)
    assert_error(
        api.http.get(f"/v1/repositories/{REPO}/chunks/{gone.digest}"), 404, "CHUNK_UNKNOWN"
    )
    # Everything kept is still pullable, byte for byte.
    for manifest, raw in [
        (steps[0], slices[0]),
        (steps[1], slices[1]),
        (steps[3], slices[3]),
        (steps[4], slices[4]),
        (untagged, slices[5]),
    ]:
        r = api.http.get(f"/v1/repositories/{REPO}/manifests/{manifest.digest}")
        assert r.status_code == 200
        for part in (config, raw):
            chunk = Chunk.of(part)
            got = api.http.get(f"/v1/repositories/{REPO}/chunks/{chunk.digest}")
            assert got.status_code == 200
            assert got.content == chunk.encoded
    assert tags_of(api, "team/other") == {"step-1": other.digest}
    # Idempotent: a second run finds nothing more to delete.
    assert run_gc(settings, grace=ZERO).manifests_deleted == 0


def test_apply_deletes_in_batches_and_gc_can_skip_retention(
    api: Api, settings: ServerSettings, weights: tuple[bytes, list[bytes]]
) -> None:
    config, slices = weights
    steps = [checkpoint(api, REPO, config, slices[i], f"step-{i}") for i in range(7)]
    assert api.http.put(url(), json={"keep": 1, "match": "step-*"}).status_code == 200
    assert run_gc(settings, grace=ZERO, retention=False).manifests_deleted == 0
    assert len(tags_of(api, REPO)) == 7

    planned = api.http.get(f"{url()}/plan").json()["delete"]
    assert [v["digest"] for v in planned] == [m.digest for m in reversed(steps[:-1])]
    tag(api, REPO, "prod", steps[0])  # after the plan was shown: apply decides afresh

    async def apply(session: Any) -> list[retention.Verdict]:
        return await retention.apply(session, REPO, batch=2)

    deleted = in_index(settings, apply)
    assert [v.digest for v in deleted] == [m.digest for m in reversed(steps[1:-1])]
    assert tags_of(api, REPO) == {
        "step-0": steps[0].digest,
        "prod": steps[0].digest,
        "step-6": steps[6].digest,
    }
    assert in_index(settings, apply) == []


# -- the CLI ---------------------------------------------------------------------------


def test_cli(tmp_path: Path, weights: tuple[bytes, list[bytes]]) -> None:
    config, slices = weights
    data = tmp_path / "data"
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, [*args, "--data", str(data)])
        assert result.exit_code == code, (args, result.output)
        return result.output

    from tests.server.server_support import make_settings

    settings = make_settings(data)
    with running(create_app(settings)) as base, Api(base) as api:
        steps = [checkpoint(api, REPO, config, slices[i], f"step-{i + 1}") for i in range(3)]
        tag(api, REPO, "release-1", steps[0])

    out = invoke(
        "retention", "set", REPO, "--keep", "1", "--match", "step-*", "--protect", "release-*"
    )
    assert out.strip() == f"{REPO}\tkeep 1\tmatch step-*\tprotect release-*"
    shown = json.loads(invoke("retention", "show", "--json"))["policies"]
    assert [(p["repository"], p["keep"], p["protect"]) for p in shown] == [(REPO, 1, ["release-*"])]
    assert json.loads(invoke("retention", "show", REPO, "--json"))["policies"][0]["keep"] == 1
    bad = invoke("retention", "set", REPO, "--keep", "0", "--match", "step-*", code=1)
    assert bad.startswith("error: invalid keep 0")
    assert bad.count("\n") == 1
    invoke("retention", "set", "Bad/Name", "--keep", "1", "--match", "x", code=1)

    plan = json.loads(invoke("retention", "plan", REPO, "--json"))
    assert [v["digest"] for v in plan["delete"]] == [steps[1].digest]
    text = invoke("retention", "plan", REPO)
    assert f"delete\t{steps[1].digest}\tstep-2" in text
    assert "protected: release-1 matches release-*" in text

    dry = invoke("gc", "--dry-run", "--grace", "0")
    assert f"would delete {REPO}@{steps[1].digest} (tags step-2;" in dry
    assert "would delete 1 chunks" in dry
    dry_json = json.loads(invoke("gc", "--dry-run", "--json"))  # default grace: 24 h
    assert dry_json["manifests_deleted"] == 1
    assert (dry_json["chunks_deleted"], dry_json["chunks_in_grace"]) == (0, 1)
    done = json.loads(invoke("gc", "--grace", "0", "--json"))
    assert done["manifests_deleted"] == 1
    assert done["chunks_deleted"] == 1
    assert json.loads(invoke("retention", "plan", REPO, "--json"))["delete"] == []

    assert "cleared" in invoke("retention", "clear", REPO)
    assert "had none" in invoke("retention", "clear", REPO)
    assert json.loads(invoke("retention", "show", "--json")) == {"policies": []}
