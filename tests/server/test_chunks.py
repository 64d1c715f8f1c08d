"""Chunk routes (``/v1/repositories/{name}/chunks``): missing query, upload, download,
and every way to get them wrong. Who may see which chunk is ``test_tenancy.py``."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator

import numpy as np
import pytest

from tests.core.test_decode_bounds import BOMBS, RSS_GROWTH_CAP, SMALL
from tests.server.server_support import (
    TEST_LIMITS,
    Api,
    Chunk,
    KiB,
    allowed_methods,
    assert_error,
    stored_chunks,
)
from wreg.core.digest import digest_bytes
from wreg.core.encoding import HEADER_SIZE, encode_chunk
from wreg.core.mediatypes import CHUNK_MEDIA_TYPE
from wreg_server.settings import ServerSettings

IMMUTABLE = "public, max-age=31536000, immutable"


# --- missing --------------------------------------------------------------------------


def test_missing_keeps_order_and_drops_duplicates(api: Api) -> None:
    a, b, c = (Chunk.of(bytes([i]) * 100) for i in range(3))
    api.upload(b)
    r = api.http.post(
        f"{api.chunks()}/missing", json={"digests": [c.digest, b.digest, a.digest, c.digest]}
    )
    assert r.status_code == 200
    assert r.json() == {"missing": [c.digest, a.digest]}


def test_missing_empty_query(api: Api) -> None:
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": []})
    assert r.status_code == 200
    assert r.json() == {"missing": []}


@pytest.mark.parametrize("digest", ["sha256:" + "0" * 64, "blake3:" + "A" * 64, "blake3:00", ""])
def test_missing_rejects_bad_digests(api: Api, digest: str) -> None:
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": [digest]})
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"not json", b"\xff\xfe", b"[]", b'{"digests": "x"}', b'{"digests": [1]}',
     b'{"digest": []}', b'{"digests": [], "extra": 1}', b"null"],
)  # fmt: skip
def test_missing_rejects_malformed_bodies(api: Api, body: bytes) -> None:
    r = api.http.post(
        f"{api.chunks()}/missing", content=body, headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "BODY_INVALID")


def test_missing_rejects_too_many_digests(api: Api) -> None:
    digests = [digest_bytes(str(i).encode()) for i in range(TEST_LIMITS["max_missing_query"] + 1)]
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": digests[:180]})
    # 180 digests exceed the JSON size limit of this test server before the count limit.
    assert r.status_code == 413
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": digests})
    assert_error(r, 413, "BODY_TOO_LARGE")


def test_missing_rejects_oversized_json(api: Api) -> None:
    body = json.dumps({"digests": [], "pad": "x" * TEST_LIMITS["max_json_body"]}).encode()
    r = api.http.post(f"{api.chunks()}/missing", content=body)
    error = assert_error(r, 413, "BODY_TOO_LARGE")
    assert error["detail"] == {"limit": TEST_LIMITS["max_json_body"]}


def test_missing_rejects_oversized_streamed_json(api: Api) -> None:
    """No Content-Length (chunked transfer): the cap holds while streaming."""

    def parts() -> Iterator[bytes]:
        yield b'{"digests": [], "pad": "'
        for _ in range(TEST_LIMITS["max_json_body"] // KiB + 1):
            yield b"x" * KiB
        yield b'"}'

    r = api.http.post(f"{api.chunks()}/missing", content=parts())
    assert_error(r, 413, "BODY_TOO_LARGE")


# --- upload / download ----------------------------------------------------------------


def test_upload_then_download(api: Api, settings: ServerSettings) -> None:
    chunk = Chunk.of(b"weights " * 1000)
    r = api.http.put(f"{api.chunks()}/{chunk.digest}", content=chunk.encoded)
    assert r.status_code == 201
    assert r.json() == {
        "digest": chunk.digest,
        "size": len(chunk.raw),
        "stored_size": len(chunk.encoded),
    }
    assert stored_chunks(settings) == [chunk.digest.split(":")[1]]
    api.reference(chunk)

    r = api.http.get(f"{api.chunks()}/{chunk.digest}")
    assert r.status_code == 200
    assert r.content == chunk.encoded
    assert r.headers["content-type"] == CHUNK_MEDIA_TYPE
    assert r.headers["cache-control"] == IMMUTABLE
    assert r.headers["etag"] == f'"{chunk.digest}"'

    r = api.http.post(f"{api.chunks()}/missing", json={"digests": [chunk.digest]})
    assert r.json() == {"missing": []}


def test_reupload_is_idempotent(api: Api, settings: ServerSettings) -> None:
    """Through a repository a re-upload is answered like the first (test_tenancy.py)."""
    chunk = Chunk.of(os.urandom(5000))
    assert api.http.put(f"{api.chunks()}/{chunk.digest}", content=chunk.encoded).status_code == 201
    r = api.http.put(f"{api.chunks()}/{chunk.digest}", content=chunk.encoded)
    assert r.status_code == 201
    assert r.json()["digest"] == chunk.digest
    assert stored_chunks(settings) == [chunk.digest.split(":")[1]]


def test_float_chunk_roundtrip(api: Api) -> None:
    values = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    chunk = Chunk.of(values.tobytes(), dtype="F32")
    api.upload(chunk)
    api.reference(chunk)
    assert api.http.get(f"{api.chunks()}/{chunk.digest}").content == chunk.encoded


def test_head(api: Api) -> None:
    chunk = Chunk.of(b"abc" * 100)
    api.upload(chunk)
    api.reference(chunk)
    r = api.http.head(f"{api.chunks()}/{chunk.digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == len(chunk.encoded)
    assert r.headers["etag"] == f'"{chunk.digest}"'
    assert r.headers["cache-control"] == IMMUTABLE


def test_conditional_get(api: Api) -> None:
    chunk = Chunk.of(b"cached" * 100)
    api.upload(chunk)
    api.reference(chunk)
    r = api.http.get(
        f"{api.chunks()}/{chunk.digest}", headers={"if-none-match": f'"{chunk.digest}"'}
    )
    assert r.status_code == 304
    assert r.content == b""
    r = api.http.get(f"{api.chunks()}/{chunk.digest}", headers={"if-none-match": '"other"'})
    assert r.status_code == 200


def test_unknown_chunk(api: Api) -> None:
    digest = digest_bytes(b"never uploaded")
    assert_error(api.http.get(f"{api.chunks()}/{digest}"), 404, "CHUNK_UNKNOWN")
    r = api.http.head(f"{api.chunks()}/{digest}")
    assert r.status_code == 404
    r = api.http.get(f"{api.chunks()}/{digest}", headers={"if-none-match": f'"{digest}"'})
    assert_error(r, 404, "CHUNK_UNKNOWN")


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "0" * 64, "blake3:" + "0" * 63, "blake3:" + "G" * 64, "blake3" + "0" * 64,
     "missing", "blake3:" + "0" * 65],
)  # fmt: skip
def test_bad_digest_in_url(api: Api, digest: str) -> None:
    chunk = Chunk.of(b"x" * 100)
    assert_error(
        api.http.put(f"{api.chunks()}/{digest}", content=chunk.encoded), 400, "DIGEST_INVALID"
    )
    assert_error(api.http.get(f"{api.chunks()}/{digest}"), 400, "DIGEST_INVALID")


def assert_invisible(api: Api, settings: ServerSettings, digest: str) -> None:
    assert_error(api.http.get(f"{api.chunks()}/{digest}"), 404, "CHUNK_UNKNOWN")
    assert api.http.head(f"{api.chunks()}/{digest}").status_code == 404
    r = api.http.post(f"{api.chunks()}/missing", json={"digests": [digest]})
    assert r.json() == {"missing": [digest]}
    assert digest.split(":")[1] not in stored_chunks(settings)


def test_content_not_matching_digest(api: Api, settings: ServerSettings) -> None:
    claimed = digest_bytes(b"the real content")
    r = api.http.put(f"{api.chunks()}/{claimed}", content=encode_chunk(b"something else"))
    error = assert_error(r, 400, "DIGEST_MISMATCH")
    assert error["detail"]["expected"] == claimed
    assert error["detail"]["actual"] == digest_bytes(b"something else")
    assert_invisible(api, settings, claimed)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"garbage", id="garbage"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="bad-magic"),
        pytest.param(lambda b: b[:4] + b"\x09" + b[5:], id="bad-version"),
        pytest.param(lambda b: b[:5] + b"\x07" + b[6:], id="bad-codec"),
        pytest.param(lambda b: b[:HEADER_SIZE - 1], id="truncated-header"),
        pytest.param(lambda b: b[:-3], id="truncated-payload"),
        pytest.param(lambda b: b + b"\x00", id="trailing-bytes"),
    ],
)  # fmt: skip
def test_bad_chunk_encoding(api: Api, settings: ServerSettings, mangle: object) -> None:
    raw = os.urandom(1000)  # incompressible: stored with codec none
    digest = digest_bytes(raw)
    assert callable(mangle)
    r = api.http.put(f"{api.chunks()}/{digest}", content=mangle(encode_chunk(raw)))
    assert_error(r, 400, "CHUNK_INVALID")
    assert_invisible(api, settings, digest)


def test_corrupt_zstd_payload(api: Api, settings: ServerSettings) -> None:
    raw = b"compressible " * 1000
    encoded = bytearray(encode_chunk(raw))
    assert len(encoded) < len(raw)  # really compressed
    encoded[HEADER_SIZE + 4 : HEADER_SIZE + 12] = b"\xff" * 8
    r = api.http.put(f"{api.chunks()}/{digest_bytes(raw)}", content=bytes(encoded))
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] in {"CHUNK_INVALID", "DIGEST_MISMATCH"}
    assert_invisible(api, settings, digest_bytes(raw))


def test_oversized_chunk_body(api: Api, settings: ServerSettings) -> None:
    raw = os.urandom(TEST_LIMITS["max_chunk_encoded"] + 1)
    digest = digest_bytes(raw)
    r = api.http.put(f"{api.chunks()}/{digest}", content=encode_chunk(raw))
    assert_error(r, 413, "CHUNK_TOO_LARGE")
    assert_invisible(api, settings, digest)


def test_oversized_streamed_chunk_body(api: Api, settings: ServerSettings) -> None:
    raw = os.urandom(TEST_LIMITS["max_chunk_encoded"] + 100)
    encoded = encode_chunk(raw)
    digest = digest_bytes(raw)

    def parts() -> Iterator[bytes]:
        for i in range(0, len(encoded), 64 * KiB):
            yield encoded[i : i + 64 * KiB]

    r = api.http.put(f"{api.chunks()}/{digest}", content=parts())
    assert_error(r, 413, "CHUNK_TOO_LARGE")
    assert_invisible(api, settings, digest)


def test_raw_length_over_limit_is_refused_before_decoding(
    api: Api, settings: ServerSettings
) -> None:
    """A tiny zstd body claiming a huge raw length (a decompression bomb) is refused."""
    raw = bytes(TEST_LIMITS["max_chunk_raw"] + 1)
    encoded = encode_chunk(raw)
    assert len(encoded) < TEST_LIMITS["max_chunk_encoded"]
    r = api.http.put(f"{api.chunks()}/{digest_bytes(raw)}", content=encoded)
    assert_error(r, 413, "CHUNK_TOO_LARGE")
    assert_invisible(api, settings, digest_bytes(raw))


@pytest.mark.parametrize(
    "name", ["no-content-size", "plane-true-huge-content-size", "plane-false-huge-content-size"]
)
def test_zstd_bomb_is_refused_without_inflating(
    api: Api, settings: ServerSettings, name: str
) -> None:
    """A few KiB whose zstd frame inflates to (or declares) gigabytes, for a small raw length.

    The server decodes in this process, so its peak RSS is this process's: the check holds
    as long as no earlier test peaked above what the bomb would reach (≥ 1 GiB).
    """
    raw = bytes(2 * SMALL if name.startswith("plane") else SMALL)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    r = api.http.put(f"{api.chunks()}/{digest_bytes(raw)}", content=BOMBS[name])
    assert_error(r, 400, "CHUNK_INVALID")
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert growth < 4 * RSS_GROWTH_CAP, f"peak RSS grew by {growth >> 20} MiB"
    assert_invisible(api, settings, digest_bytes(raw))
    assert api.http.get("/healthz").status_code == 200


def test_chunk_at_the_raw_limit_is_accepted(api: Api) -> None:
    chunk = Chunk.of(os.urandom(TEST_LIMITS["max_chunk_raw"]))
    assert len(chunk.encoded) <= TEST_LIMITS["max_chunk_encoded"]
    assert api.http.put(f"{api.chunks()}/{chunk.digest}", content=chunk.encoded).status_code == 201


def test_wrong_method(api: Api) -> None:
    r = api.http.delete(f"{api.chunks()}/{digest_bytes(b'x')}")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert allowed_methods(r) == ["GET", "HEAD", "PUT"]
