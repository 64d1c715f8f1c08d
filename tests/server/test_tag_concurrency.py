"""Tag moves under concurrency: last writer wins, ``If-Match`` compare-and-swap.

Runs on SQLite and PostgreSQL (the ``settings`` fixture), each against a real server.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

import httpx
import pytest

from tests.server.server_support import Api, assert_error
from wreg.core.digest import digest_bytes
from wreg.core.manifest import Manifest

WORKERS = 8
ROUNDS = 5
T = TypeVar("T")
Outcome = tuple[int, str]

URL = "/v1/repositories/team/model/tags/latest"


def push_many(api: Api, n: int) -> list[Manifest]:
    return [api.push("team/model", ("f", f"version {i}".encode()), tag=None) for i in range(n)]


def etag(digest: str) -> str:
    return f'"{digest}"'


def in_parallel(base_url: str, work: Callable[[httpx.Client, int], T], n: int) -> list[T]:
    """Run ``work(client, i)`` for i < n at once (each with its own connection)."""
    start = threading.Barrier(n)

    def one(i: int) -> T:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            client.get("/healthz")  # connect before the barrier, so requests really overlap
            start.wait()
            return work(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def current(api: Api) -> str:
    r = api.http.get(URL)
    assert r.status_code == 200, r.text
    digest: str = r.json()["digest"]
    assert r.headers["etag"] == etag(digest)
    # Every view of the tag agrees.
    manifest = api.http.get("/v1/repositories/team/model/manifests/latest")
    assert manifest.headers["wreg-manifest-digest"] == digest
    listed = api.http.get("/v1/repositories/team/model/tags").json()["tags"]
    assert [t["digest"] for t in listed if t["tag"] == "latest"] == [digest]
    return digest


def test_if_match_moves_only_from_the_expected_digest(api: Api) -> None:
    m1, m2, m3 = push_many(api, 3)
    r = api.http.put(URL, json={"digest": m1.digest}, headers={"If-None-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == etag(m1.digest)

    r = api.http.put(URL, json={"digest": m2.digest}, headers={"If-Match": etag(m1.digest)})
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == m2.digest

    # Stale expectation: refused, tag unchanged, the error says where it points now.
    r = api.http.put(URL, json={"digest": m3.digest}, headers={"If-Match": etag(m1.digest)})
    error = assert_error(r, 412, "TAG_CONFLICT")
    assert error["detail"]["current"] == m2.digest
    assert error["detail"]["if_match"] == [m1.digest]
    assert current(api) == m2.digest

    # A list matches any of its members; an unquoted digest is accepted too.
    r = api.http.put(
        URL, json={"digest": m3.digest}, headers={"If-Match": f"{etag(m1.digest)}, {m2.digest}"}
    )
    assert r.status_code == 200, r.text
    assert current(api) == m3.digest


def test_preconditions_on_existence(api: Api) -> None:
    m1, m2 = push_many(api, 2)
    # If-Match on a tag that does not exist yet fails, even with *.
    for value in (etag(m1.digest), "*"):
        r = api.http.put(URL, json={"digest": m1.digest}, headers={"If-Match": value})
        assert assert_error(r, 412, "TAG_CONFLICT")["detail"]["current"] is None
    assert_error(api.http.get(URL), 404, "TAG_UNKNOWN")
    # If-None-Match: * creates only.
    r = api.http.put(URL, json={"digest": m1.digest}, headers={"If-None-Match": "*"})
    assert r.status_code == 200
    r = api.http.put(URL, json={"digest": m2.digest}, headers={"If-None-Match": "*"})
    assert_error(r, 412, "TAG_CONFLICT")
    r = api.http.put(URL, json={"digest": m2.digest}, headers={"If-Match": "*"})
    assert r.status_code == 200
    assert current(api) == m2.digest
    # No header: last writer wins, whatever the tag points at.
    r = api.http.put(URL, json={"digest": m1.digest})
    assert r.status_code == 200
    assert current(api) == m1.digest


def test_delete_with_if_match(api: Api) -> None:
    m1, m2 = push_many(api, 2)
    api.http.put(URL, json={"digest": m1.digest}).raise_for_status()
    r = api.http.delete(URL, headers={"If-Match": etag(m2.digest)})
    assert_error(r, 412, "TAG_CONFLICT")
    assert current(api) == m1.digest
    assert api.http.delete(URL, headers={"If-Match": etag(m1.digest)}).status_code == 204
    assert_error(api.http.get(URL), 404, "TAG_UNKNOWN")


@pytest.mark.parametrize("value", ["sha256:abc", '"blake3:xyz"', "W/" + etag(digest_bytes(b"x"))])
def test_malformed_precondition(api: Api, value: str) -> None:
    (m1,) = push_many(api, 1)
    r = api.http.put(URL, json={"digest": m1.digest}, headers={"If-Match": value})
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(api.http.get(URL), 404, "TAG_UNKNOWN")


def test_precondition_is_checked_after_the_manifest(api: Api) -> None:
    push_many(api, 1)
    r = api.http.put(URL, json={"digest": digest_bytes(b"nope")}, headers={"If-None-Match": "*"})
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_racing_writers_last_writer_wins(api: Api, base_url: str) -> None:
    """Moves are serialized (each takes the repository lock, then stamps ``updated_at``),
    so the tag ends where the move with the latest ``updated_at`` put it, and no two
    moves share a timestamp."""
    manifests = push_many(api, WORKERS)
    digests = [m.digest for m in manifests]
    for round_ in range(ROUNDS):

        def move(client: httpx.Client, i: int, round_: int = round_) -> tuple[datetime, str]:
            target = digests[(i + round_) % WORKERS]  # each round, other writers race
            r = client.put(URL, json={"digest": target})
            assert r.status_code == 200, r.text
            assert r.json()["digest"] == target, r.text
            return datetime.fromisoformat(r.json()["updated_at"]), target

        writes = in_parallel(base_url, move, WORKERS)
        assert len({at for at, _ in writes}) == WORKERS, writes
        last_at, last_digest = max(writes)
        assert current(api) == last_digest, writes
        assert datetime.fromisoformat(api.http.get(URL).json()["updated_at"]) == last_at


def test_racing_compare_and_swap_has_one_winner_per_round(api: Api, base_url: str) -> None:
    manifests = push_many(api, WORKERS + 1)
    api.http.put(URL, json={"digest": manifests[0].digest}).raise_for_status()
    candidates = [m.digest for m in manifests[1:]]
    for round_ in range(ROUNDS):
        before = current(api)

        def swap(
            client: httpx.Client, i: int, before: str = before, round_: int = round_
        ) -> Outcome:
            target = candidates[(i + round_) % len(candidates)]
            if target == before:  # moving onto itself is fine but not a real contest
                target = manifests[0].digest
            r = client.put(URL, json={"digest": target}, headers={"If-Match": etag(before)})
            if r.status_code == 412:
                assert r.json()["errors"][0]["detail"]["current"] != before
            return r.status_code, target

        results = in_parallel(base_url, swap, WORKERS)
        statuses = Counter(status for status, _ in results)
        assert statuses == {200: 1, 412: WORKERS - 1}, results
        (winner,) = [target for status, target in results if status == 200]
        assert current(api) == winner


def test_tag_moves_race_manifest_commits_and_deletes(api: Api, base_url: str) -> None:
    """Tag PUTs, manifest commits moving the same tag and tag deletes never deadlock."""
    manifests = push_many(api, 4)
    bodies = [(m.digest, m.to_json_bytes()) for m in manifests]

    def churn(client: httpx.Client, i: int) -> list[int]:
        statuses = []
        for j in range(6):
            digest, body = bodies[(i + j) % len(bodies)]
            if i % 3 == 0:
                r = client.put(
                    f"/v1/repositories/team/model/manifests/{digest}?tag=latest", content=body
                )
            elif i % 3 == 1:
                r = client.put(URL, json={"digest": digest})
            else:
                r = client.delete(URL)
            statuses.append(r.status_code)
        return statuses

    results = in_parallel(base_url, churn, WORKERS)
    assert {s for statuses in results for s in statuses} <= {200, 204, 404}, results
    r = api.http.get(URL)
    if r.status_code == 200:
        assert current(api) in {d for d, _ in bodies}
    else:
        assert_error(r, 404, "TAG_UNKNOWN")
