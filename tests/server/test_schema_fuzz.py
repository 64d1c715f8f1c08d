"""schemathesis over the server's OpenAPI schema, against a real server on 127.0.0.1.

Every operation gets ``SCHEMA_EXAMPLES`` generated requests (25 in ``make test``, more
under ``make soak``; see ``tests/fuzzing.py``), valid and invalid ones, on the SQLite and
the PostgreSQL index. Each response must not be a 5xx, must conform to the schema, and an
error must be the one error envelope with the status the error table gives its code.

The served schema (server/wreg_server/api/openapi.py) documents the one error envelope
as every operation's ``default`` response, drops FastAPI's 422 (the server answers 400
``BODY_INVALID`` instead) and gives digests, names and tags their patterns;
``test_served_schema_documents_errors`` keeps it that way, so the fuzzer reads the very
schema clients get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.fuzzing import SCHEMA_EXAMPLES
from tests.server.server_support import allowed_methods, make_settings
from wreg.core.errors import ErrorCode
from wreg_server.app import create_app

# Path parameters the served schema gives a pattern (wreg.core's grammar), so the fuzzer
# also sends well-formed digests, names and tags, not only noise.
PATTERNED_PARAMETERS = {"digest", "name", "tag", "reference"}


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


schema = schemathesis.openapi.from_dict(served_schema())


Case = schemathesis.Case[Any]  # of any operation of the schema


def error_envelope(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """Every 4xx/5xx is ``{"errors": [{code, message, detail}]}`` with the table's status."""
    if response.status_code < 400:
        return None
    assert response.headers.get("x-request-id"), "error without X-Request-Id"
    if case.method.upper() == "HEAD":
        return None  # no body to check
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"errors"}, body
    (error,) = body["errors"]
    assert set(error) == {"code", "message", "detail"}, error
    code = ErrorCode[error["code"]]
    # The framework's own 404/405 keep their HTTP status; everything else follows the table.
    assert response.status_code == code.status, (response.status_code, error)
    return None


def _route_pattern(template: str) -> re.Pattern[str]:
    """The paths ``template`` routes, as the server's router matches them: ``{name}`` is
    ``{name:path}`` there (it spans segments), every other parameter one segment."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "".join(
            ("(.+)" if part == "{name}" else "([^/]+)") if part.startswith("{") else re.escape(part)
            for part in parts
        )
    )


ROUTES = [
    (_route_pattern(path), {method.upper() for method, _, _ in _operations({"paths": {path: ops}})})
    for path, ops in served_schema()["paths"].items()
]


def documented_methods(path: str) -> list[str]:
    """Every method the schema documents on some route template that ``path`` matches."""
    return sorted({m for pattern, methods in ROUTES if pattern.fullmatch(path) for m in methods})


def allow_lists_the_documented_methods(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """A 405's ``Allow`` names exactly the methods documented for its URL (RFC 9110 §15.5.6).

    Schemathesis's own ``allow_header_conformance`` compares it with the one template the
    request was generated from; ours overlap (``.../chunks/missing`` is also
    ``.../chunks/{digest}``, ``/v1/tokens/self`` also ``/v1/tokens/{token_name}``, a
    manifest URL is both ``{digest}`` and ``{reference}``), so the right set is the union
    over every template the URL matches.
    """
    if response.status_code != 405:
        return None
    path = unquote(urlsplit(response.request.url).path)
    advertised = sorted(m.strip() for v in response.headers.get("allow", []) for m in v.split(","))
    assert advertised == documented_methods(path), (path, advertised)
    return None


@schema.parametrize()
@settings(
    max_examples=SCHEMA_EXAMPLES,
    deadline=None,
    # One real server per operation and backend serves all of its examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api(case: Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        additional_checks=[error_envelope, allow_lists_the_documented_methods],
        # Schema-valid requests may still name a chunk, repository or tag that does not
        # exist (404), or a manifest the body does not hash to (400): not a defect.
        # Route templates overlap (PUT .../chunks/missing is PUT .../chunks/{digest} with
        # digest "missing"), so "undeclared" methods often reach a real route: not a defect,
        # and for the same reason the stock Allow check gives way to
        # allow_lists_the_documented_methods. The schema declares bearer auth, which this
        # server (WREG_AUTH off) does not ask for: tokens are tests/server/test_auth.py's.
        excluded_checks=[
            schemathesis.checks.positive_data_acceptance,
            schemathesis.checks.unsupported_method,
            schemathesis.checks.allow_header_conformance,
            schemathesis.checks.ignored_auth,
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
            if param["name"] in PATTERNED_PARAMETERS and "pattern" not in param["schema"]:
                gaps.append(f"{method.upper()} {path}: {param['name']} has no pattern")
    assert not gaps, "\n".join(gaps)


_A_DIGEST = "blake3:" + "ab" * 32


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/repositories/team/model/tags/v1", ["DELETE", "GET", "PUT"]),
        (f"/v1/repositories/team/model/manifests/{_A_DIGEST}", ["DELETE", "GET", "HEAD", "PUT"]),
        (f"/v1/repositories/team/model/chunks/{_A_DIGEST}", ["GET", "HEAD", "PUT"]),
        ("/v1/repositories/team/model/chunks/missing", ["GET", "HEAD", "POST", "PUT"]),
        ("/v1/repositories", ["GET"]),
    ],
)
def test_405_lists_exactly_the_allowed_methods(
    base_url: str, path: str, allowed: list[str]
) -> None:
    """RFC 9110 §15.5.6: every method the resource supports, and no other."""
    response = httpx.request("OPTIONS", f"{base_url}{path}")
    assert response.status_code == 405
    assert allowed_methods(response) == allowed, response.headers["allow"]
    assert documented_methods(path) == allowed  # the fuzz check's reading of the schema
