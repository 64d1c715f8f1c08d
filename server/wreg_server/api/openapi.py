"""The served OpenAPI schema, made to say what the server really does.

FastAPI documents a 422 on every operation (we answer 400 ``BODY_INVALID`` instead) and
knows nothing of our error envelope or of the grammar of digests, names and tags. This
rewrites the generated schema once: no 422, a ``default`` response with the one error
format (codes from the one table), and patterns on path parameters — so clients and
schema fuzzers (tests/server/test_schema_fuzz.py) see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from wreg.core.digest import DIGEST_PATTERN
from wreg.core.errors import ErrorCode
from wreg.core.reference import NAME_PATTERN, TAG_PATTERN

# The grammar lives in wreg.core; the schema only anchors it.
_DIGEST = f"^{DIGEST_PATTERN}$"
_TAG = f"^{TAG_PATTERN}$"
PATH_PATTERNS = {
    "digest": _DIGEST,
    "name": f"^{NAME_PATTERN}$",
    "tag": _TAG,
    "reference": f"{_TAG}|{_DIGEST}",
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
                    "code": {"type": "string", "enum": [c.name for c in ErrorCode if not c.local]},
                    "message": {"type": "string"},
                    "detail": {},
                },
            },
        }
    },
}
_METHODS = {"get", "put", "post", "delete", "head", "patch"}


def install(app: FastAPI) -> None:
    """Serve the corrected schema at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            app.openapi_schema = document(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(schema: dict[str, Any]) -> dict[str, Any]:
    for ops in schema.get("paths", {}).values():
        for method, op in ops.items():
            if method not in _METHODS:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault(
                "default",
                {"description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
            )
            for param in op.get("parameters", []):
                pattern = PATH_PATTERNS.get(param["name"])
                if pattern is not None and param["in"] in ("path", "query"):
                    param["schema"] = {
                        **param.get("schema", {}),
                        "type": "string",
                        "pattern": pattern,
                    }
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
