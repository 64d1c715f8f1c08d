"""schemathesis over the server's OpenAPI schema, against a real server on 127.0.0.1.

Every operation gets ``SCHEMA_EXAMPLES`` generated requests (25 in ``make test``, more
under ``make soak``; see ``tests/fuzzing.py``), valid and invalid ones, on the SQLite and
the PostgreSQL index. Each response must not be a 5xx, must conform to the schema, and an
error must be the one error envelope with the status the error table gives its code.

The served schema (server/wreg_server/api/openapi.py) documents the one error envelope
as every operation's ``default`` response, drops FastAPI's 422 (the server answers 400
``BODY_INVALID`` instead) and gives digests, names and tags their patterns;
``test_served_schema_documents_errors`` keeps it that way. ``documented(...)`` adds the
same pieces to whatever is still missing, so it is a no-op while that test passes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from server_support import make_settings

from tests.fuzzing import SCHEMA_EXAMPLES
from wreg.core.errors import ErrorCode
from wreg_server.app import create_app

_DIGEST = r"^blake3:[0-9a-f]{64}$"
_SEGMENT = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
_NAME = rf"^{_SEGMENT}(?:/{_SEGMENT})?$"
_TAG = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
PARAMETER_PATTERNS = {
    "digest": _DIGEST,
    "name": _NAME,
    "tag": _TAG,
    "reference": rf"{_TAG}|{_DIGEST}",
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["errors"],
    "additionalProperties": False,
    "properties": {
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["code", "message", "detail"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": [c.name for c in ErrorCode]},
                    "message": {"type": "string"},
                    "detail": {},
                },
            },
        }
    },
}


def served_schema() -> dict[str, Any]:
    """The schema exactly as the app serves it at /openapi.json."""
    schema: dict[str, Any] = create_app(make_settings(Path("unused"))).openapi()
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in {"get", "put", "post", "delete", "head", "patch"}
    ]


def documented(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` plus what it should document: the error responses, parameter patterns."""
    schema = copy.deepcopy(schema)
    for _, _, op in _operations(schema):
        responses = op.setdefault("responses", {})
        responses.pop("422", None)  # FastAPI's; the server answers 400 BODY_INVALID instead
        responses.setdefault(
            "default",
            {
                "description": "error",
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            },
        )
        for param in op.get("parameters", []):
            pattern = PARAMETER_PATTERNS.get(param["name"])
            if pattern is not None and param["in"] == "path" and "pattern" not in param["schema"]:
                param["schema"] = {"type": "string", "pattern": pattern}
    return schema


schema = schemathesis.openapi.from_dict(documented(served_schema()))


def error_envelope(ctx: schemathesis.CheckContext, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is ``{"errors": [{code, message, detail}]}`` with the table's status."""
    if response.status_code < 400:
        return None
    assert response.headers.get("x-request-id"), "error without X-Request-Id"
    if case.method.upper() == "HEAD":
        return None  # no body to check
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    (error,) = body["errors"]
    assert set(error) == {"code", "message", "detail"}, error
    code = ErrorCode[error["code"]]
    # The framework's own 404/405 keep their HTTP status; everything else follows the table.
    assert response.status_code == code.status, (response.status_code, error)
    return None


@schema.parametrize()
@settings(
    max_examples=SCHEMA_EXAMPLES,
    deadline=None,
    # One real server per operation and backend serves all of its examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        additional_checks=[error_envelope],
        # Schema-valid requests may still name a chunk, repository or tag that does not
        # exist (404), or a manifest the body does not hash to (400): not a defect.
        # Route templates overlap (PUT /v1/chunks/missing is PUT /v1/chunks/{digest} with
        # digest "missing"), so "undeclared" methods often reach a real route: not a defect.
        # The Allow header of a 405 is wrong (test_405_lists_every_allowed_method).
        excluded_checks=[
            schemathesis.checks.positive_data_acceptance,
            schemathesis.checks.unsupported_method,
            schemathesis.checks.allow_header_conformance,
        ],
        timeout=30,
    )


def test_served_schema_documents_errors() -> None:
    gaps = []
    for method, path, op in _operations(served_schema()):
        responses = op.get("responses", {})
        if "422" in responses:
            gaps.append(f"{method.upper()} {path}: documents 422")
        if not any(
            code == "default" or code.startswith("4") for code in responses if code != "422"
        ):
            gaps.append(f"{method.upper()} {path}: no error response")
        for param in op.get("parameters", []):
            if param["name"] in PARAMETER_PATTERNS and "pattern" not in param["schema"]:
                gaps.append(f"{method.upper()} {path}: {param['name']} has no pattern")
    assert not gaps, "\n".join(gaps)


def test_405_lists_every_allowed_method(base_url: str) -> None:
    response = httpx.request("OPTIONS", f"{base_url}/v1/repositories/team/model/tags/v1")
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "PUT", "DELETE"} <= allowed, response.headers["allow"]
