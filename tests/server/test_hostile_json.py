"""Hostile JSON and vanishing clients are client errors, never a 500 or an ERROR log line.

Python's ``json`` raises ``RecursionError`` (not ``ValueError``) for deep nesting, so a
parser that only catches ``ValueError`` turns ``[[[[…]]]]`` into a traceback; and
Starlette raises ``ClientDisconnect`` when a client hangs up mid-body, which is the
client's doing, not a server failure.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.server.server_support import Api
from wreg.core.digest import digest_bytes

DEPTH = 8_000  # far past Python's recursion limit, yet under the test JSON body cap (16 KiB)
ARRAYS = b"[" * DEPTH + b"]" * DEPTH
OBJECTS = b'{"a":' * (DEPTH // 4) + b"1" + b"}" * (DEPTH // 4)
INSIDE = b'{"digests":' + ARRAYS + b"}"
UNCLOSED = b"[" * DEPTH


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _assert_client_error(response_status: int, body: dict[str, object], code: str) -> None:
    assert response_status == 400, body
    errors = body["errors"]
    assert isinstance(errors, list)
    assert errors[0]["code"] == code


@pytest.mark.parametrize("payload", [ARRAYS, OBJECTS, INSIDE, UNCLOSED], ids=list("AOIU"))
def test_deep_json_bodies_are_400(
    api: Api, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    requests = [
        ("POST", "/v1/repositories/deep/chunks/missing"),
        ("PUT", "/v1/repositories/deep/tags/latest"),
        ("POST", "/v1/tokens"),
    ]
    for method, path in requests:
        r = api.http.request(
            method, path, content=payload, headers={"Content-Type": "application/json"}
        )
        _assert_client_error(r.status_code, r.json(), "BODY_INVALID")
    r = api.http.put(f"/v1/repositories/deep/manifests/{digest_bytes(payload)}", content=payload)
    _assert_client_error(r.status_code, r.json(), "MANIFEST_INVALID")
    assert _errors(caplog) == []


def test_deep_manifest_metadata_is_400(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Nesting the JSON parser accepts but the canonical encoder would recurse through."""
    for depth in (900, 20_000):
        body = b'{"files":[],"metadata":{"a":' + b"[" * depth + b"]" * depth + b'},"schema":1}'
        r = api.http.put(f"/v1/repositories/deep/manifests/{digest_bytes(body)}", content=body)
        _assert_client_error(r.status_code, r.json(), "MANIFEST_INVALID")
    assert _errors(caplog) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/repositories/deep/chunks/missing"),
        ("PUT", "/v1/repositories/gone/tags/latest"),
        ("PUT", "/v1/repositories/gone/manifests/" + digest_bytes(b"x")),
        ("PUT", "/v1/repositories/gone/chunks/" + digest_bytes(b"x")),
    ],
)
def test_client_hanging_up_mid_body_is_not_a_server_error(
    base_url: str, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000\r\n\r\n".encode()
            + b'{"digests": ["'
        )
        time.sleep(0.3)  # let the handler start reading the body
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        r.name == "wreg_server.access" for r in caplog.records
    ):
        time.sleep(0.05)
    assert any(r.name == "wreg_server.access" for r in caplog.records), "request never ended"
    assert _errors(caplog) == []
