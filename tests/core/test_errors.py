"""The error table: every code maps to one class by kind, on both sides, and README lists it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wreg._http import http_error
from wreg.core.errors import (
    AuthError,
    Conflict,
    ErrorCode,
    ErrorKind,
    IntegrityError,
    InvalidInput,
    NotFound,
    RegistryError,
    TransportError,
    WregError,
    markdown_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"

# The class each kind must raise: written out here, not derived from the table under test.
EXPECTED_CLASS: dict[ErrorKind, type[WregError]] = {
    ErrorKind.INVALID: InvalidInput,
    ErrorKind.INTEGRITY: IntegrityError,
    ErrorKind.NOT_FOUND: NotFound,
    ErrorKind.AUTH: AuthError,
    ErrorKind.CONFLICT: Conflict,
    ErrorKind.TRANSIENT: TransportError,
    ErrorKind.INTERNAL: RegistryError,
}


def _envelope(code: str, message: str = "m") -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def test_every_member_is_distinct_and_documented() -> None:
    assert len(ErrorCode) == len(ErrorCode.__members__)  # no member aliases another
    for code in ErrorCode:
        assert code.message
        assert code.description.endswith(".")
        assert code.status is None or 400 <= code.status < 600


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_code_raises_the_class_of_its_kind(code: ErrorCode) -> None:
    error = code.error("boom", detail={"x": 1}, request_id="r9")
    assert type(error) is EXPECTED_CLASS[code.kind]
    assert error.code is code
    assert error.detail == {"x": 1}
    assert error.request_id == "r9"
    assert error.retryable is (code.kind is ErrorKind.TRANSIENT)
    assert error.to_dict() == {"code": code.name, "message": "boom", "detail": {"x": 1}}


@pytest.mark.parametrize("code", [c for c in ErrorCode if not c.local], ids=lambda c: c.name)
def test_a_wire_error_becomes_the_same_class_on_the_client(code: ErrorCode) -> None:
    assert code.status is not None
    error = http_error(code.status, _envelope(code.name, "said"), "rid", "test call")
    assert type(error) is EXPECTED_CLASS[code.kind]
    assert error.code is code
    assert error.message == "said"
    assert error.request_id == "rid"


def test_timeouts_and_unavailable_are_transient_on_both_sides() -> None:
    for code in (ErrorCode.REQUEST_TIMEOUT, ErrorCode.UNAVAILABLE):
        assert isinstance(code.error(), TransportError)
        assert code.error().retryable
    assert ErrorCode.TAG_CONFLICT.kind is ErrorKind.CONFLICT


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, ErrorCode.NOT_FOUND),
        (401, ErrorCode.UNAUTHORIZED),
        (403, ErrorCode.DENIED),
        (408, ErrorCode.REQUEST_TIMEOUT),
        (413, ErrorCode.BODY_TOO_LARGE),
        (429, ErrorCode.UNAVAILABLE),
        (502, ErrorCode.UNAVAILABLE),
        (500, ErrorCode.INTERNAL),
        (400, ErrorCode.INTERNAL),
        (418, ErrorCode.INTERNAL),
    ],
)
def test_an_answer_without_our_envelope_maps_by_status(status: int, expected: ErrorCode) -> None:
    error = http_error(status, b"<html>bad gateway</html>", None, "the call")
    assert error.code is expected
    assert "the call: HTTP" in error.message


def test_unknown_or_local_codes_on_the_wire_map_by_status() -> None:
    assert http_error(404, _envelope("NEW_FANCY_UNKNOWN"), None, "x").code is ErrorCode.NOT_FOUND
    # A server cannot make the client raise a client-only failure.
    assert http_error(400, _envelope("FILE_CHANGED"), None, "x").code is ErrorCode.INTERNAL


def test_constructing_a_class_with_a_code_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="TAG_UNKNOWN"):
        InvalidInput(ErrorCode.TAG_UNKNOWN, "x")


def test_errors_survive_pickling() -> None:
    import pickle

    error = ErrorCode.CHUNK_UNKNOWN.error("gone", detail={"d": 1}, request_id="r")
    back = pickle.loads(pickle.dumps(error))  # noqa: S301 - bytes we just made
    assert type(back) is NotFound
    assert back.code is ErrorCode.CHUNK_UNKNOWN
    assert (back.message, back.detail, back.request_id) == ("gone", {"d": 1}, "r")


def test_readme_error_table_is_generated_from_the_table() -> None:
    text = README.read_text()
    found = re.search(
        r"<!-- error-codes:begin -->\n(.*?)\n<!-- error-codes:end -->", text, re.DOTALL
    )
    assert found, "README lacks the generated error code table"
    assert found.group(1).strip() == markdown_table(), (
        "README's error table is stale: run `make docs`"
    )
