"""Batched chunk routes (``POST .../chunks/fetch``, ``POST .../chunks/upload``) on both
deployments: frames in order, every chunk checked as a single GET or PUT would check it,
caps, and hostile framing. Who may use them is ``test_auth.py`` and ``test_tenancy.py``."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import httpx
import pytest

from tests.server.server_support import (
    Api,
    Chunk,
    KiB,
    assert_error,
    file_doc,
    raw_manifest,
    running,
    stored_chunks,
)
from wreg.core.batch import FRAME_HEADER_SIZE, encode_frames, frame_header, frames
from wreg.core.digest import digest_bytes
from wreg.core.mediatypes import CHUNK_FRAMES_MEDIA_TYPE
from wreg_server.app import create_app
from wreg_server.settings import ServerSettings

MAX_CHUNKS = 8
MAX_BYTES = 300 * KiB  # above one largest chunk (TEST_LIMITS: 256 KiB + 1 KiB encoded)


@pytest.fixture
def batch_settings(settings: ServerSettings) -> ServerSettings:
    return settings.model_copy(
        update={"max_batch_chunks": MAX_CHUNKS, "max_batch_bytes": MAX_BYTES}
    )


@pytest.fixture
def api(batch_settings: ServerSettings) -> Iterator[Api]:
    with running(create_app(batch_settings)) as url, Api(url) as client:
        yield client


def upload(api: Api, chunks: list[Chunk], repository: str | None = None) -> httpx.Response:
    body = encode_frames([(c.digest, c.encoded) for c in chunks])
    return api.http.post(
        f"{api.chunks(repository)}/upload",
        content=body,
        headers={"Content-Type": CHUNK_FRAMES_MEDIA_TYPE},
    )


def fetch(api: Api, digests: list[str], repository: str | None = None) -> httpx.Response:
    return api.http.post(f"{api.chunks(repository)}/fetch", json={"digests": digests})


def parsed(response: httpx.Response) -> list[tuple[str, bytes]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CHUNK_FRAMES_MEDIA_TYPE
    assert response.headers["cache-control"] == "no-store"
    found = frames(response.content, max_count=1 << 20, max_length=1 << 30)
    return [(d, bytes(b)) for d, b in found]


def reference(api: Api, *chunks: Chunk, repository: str | None = None) -> None:
    """Commit a manifest of ``repository`` naming each chunk as one file (so they become
    readable through it); built by hand, independent of the client's manifest schema."""
    body = raw_manifest([file_doc(f"f{i:04d}.bin", c) for i, c in enumerate(chunks)])
    r = api.commit(repository or api.repository, body, "latest")
    assert r.status_code in (200, 201), r.text


def some(n: int, size: int = 16) -> list[Chunk]:
    return [Chunk.of(i.to_bytes(4, "big") * (size // 4)) for i in range(n)]


def test_upload_then_fetch_in_request_order(api: Api) -> None:
    a, b, c = some(3)
    r = upload(api, [a, b, c])
    assert r.status_code == 201, r.text
    assert r.json() == {
        "chunks": [
            {"digest": x.digest, "size": len(x.raw), "stored_size": len(x.encoded)}
            for x in (a, b, c)
        ]
    }
    # Uploaded through the repository: usable by a push to it, readable once referenced.
    missing = api.http.post(f"{api.chunks()}/missing", json={"digests": [a.digest, b.digest]})
    assert missing.json() == {"missing": []}
    reference(api, a, b, c)
    got = parsed(fetch(api, [c.digest, a.digest, b.digest, a.digest]))
    assert got == [(x.digest, x.encoded) for x in (c, a, b, a)]
    assert parsed(fetch(api, [])) == []
    # Each chunk is still its own object: single GETs answer the same bytes.
    assert api.http.get(f"{api.chunks()}/{b.digest}").content == b.encoded


def test_upload_again_and_duplicates_are_idempotent(
    api: Api, batch_settings: ServerSettings
) -> None:
    a, b = some(2)
    assert upload(api, [a, a, b]).status_code == 201
    api.upload(a)
    r = upload(api, [b, a])
    assert r.status_code == 201
    assert [x["digest"] for x in r.json()["chunks"]] == [b.digest, a.digest]
    assert len(stored_chunks(batch_settings)) == 2
    reference(api, a, b)
    assert parsed(fetch(api, [a.digest, b.digest])) == [
        (a.digest, a.encoded),
        (b.digest, b.encoded),
    ]


def test_unknown_and_unreadable_chunks_answer_alike(api: Api) -> None:
    mine, theirs, never = some(3)
    api.upload(mine)
    reference(api, mine)
    api.upload(theirs, "other/repo")
    reference(api, theirs, repository="other/repo")
    for hidden in (theirs, never):
        r = fetch(api, [mine.digest, hidden.digest, hidden.digest])
        error = assert_error(r, 404, "CHUNK_UNKNOWN")
        assert error["detail"] == {"digests": [hidden.digest]}
        assert hidden.digest in error["message"]
    # Through its own repository the same chunk is readable.
    assert parsed(fetch(api, [theirs.digest], "other/repo")) == [(theirs.digest, theirs.encoded)]


def incompressible(n: int, size: int = 100 * KiB) -> list[Chunk]:
    rng = random.Random(n)  # noqa: S311 - test data, not secrets
    return [Chunk.of(rng.randbytes(size)) for _ in range(n)]


def test_fetch_caps_are_refused_before_any_byte(api: Api) -> None:
    chunks = some(MAX_CHUNKS + 1)
    for c in chunks:
        api.upload(c)
    reference(api, *chunks)
    error = assert_error(fetch(api, [c.digest for c in chunks]), 413, "BODY_TOO_LARGE")
    assert error["detail"] == {"limit": MAX_CHUNKS, "count": MAX_CHUNKS + 1}
    big = incompressible(3)
    for c in big:
        api.upload(c)
    reference(api, *big)
    assert len(parsed(fetch(api, [big[0].digest, big[1].digest]))) == 2  # under the cap
    error = assert_error(fetch(api, [c.digest for c in big]), 413, "BODY_TOO_LARGE")
    assert error["detail"] == {
        "limit": MAX_BYTES,
        "size": sum(len(c.encoded) + FRAME_HEADER_SIZE for c in big),
    }
    assert_error(fetch(api, ["sha256:00"]), 400, "DIGEST_INVALID")
    assert_error(api.http.post(f"{api.chunks()}/fetch", json={"digest": []}), 400, "BODY_INVALID")


def test_upload_caps(api: Api, batch_settings: ServerSettings) -> None:
    error = assert_error(upload(api, some(MAX_CHUNKS + 1)), 413, "BODY_TOO_LARGE")
    assert error["detail"] == {"limit": MAX_CHUNKS}
    assert_error(upload(api, incompressible(3)), 413, "BODY_TOO_LARGE")
    assert upload(api, incompressible(2)).status_code == 201
    assert len(stored_chunks(batch_settings)) == 2


def test_a_bad_chunk_refuses_the_whole_batch(api: Api, batch_settings: ServerSettings) -> None:
    a, b, c = some(3)
    wrong = Chunk(b.raw, b.digest, c.encoded)  # c's bytes under b's name
    error = assert_error(upload(api, [a, wrong, c]), 400, "DIGEST_MISMATCH")
    assert error["detail"]["digest"] == b.digest
    assert error["detail"]["frame"] == 1
    garbled = Chunk(b.raw, b.digest, b"WRGC" + b.encoded[4:5] + b"\xff" + b.encoded[6:])
    error = assert_error(upload(api, [a, garbled]), 400, "CHUNK_INVALID")
    assert error["detail"]["frame"] == 1
    assert stored_chunks(batch_settings) == []  # nothing of either batch was stored


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"\x00" * (FRAME_HEADER_SIZE - 1), 400, "BODY_INVALID"),  # truncated header
        (frame_header(digest_bytes(b"x"), 100) + b"short", 400, "BODY_INVALID"),  # past body
        (struct.pack("<32sI", bytes(32), 0xFFFF_FFFF), 413, "CHUNK_TOO_LARGE"),  # past the cap
        (frame_header(digest_bytes(b"x"), 0), 400, "CHUNK_INVALID"),  # an empty chunk
    ],
    ids=["truncated-header", "length-past-body", "length-past-cap", "empty-chunk"],
)
def test_hostile_framing(
    api: Api, batch_settings: ServerSettings, body: bytes, status: int, code: str
) -> None:
    good = some(1)[0]
    r = api.http.post(
        f"{api.chunks()}/upload",
        content=encode_frames([(good.digest, good.encoded)]) + body,
    )
    assert_error(r, status, code)
    assert stored_chunks(batch_settings) == []


def test_an_empty_upload_is_refused(api: Api) -> None:
    assert_error(api.http.post(f"{api.chunks()}/upload", content=b""), 400, "BODY_INVALID")
