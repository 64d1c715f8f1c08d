"""The served OpenAPI schema, made to say what the server really does.

FastAPI documents a 422 on every operation (we answer 400 ``BODY_INVALID`` instead) and
knows nothing of our error envelope, our tokens or the grammar of digests, names and
tags. This rewrites the generated schema once, so clients, generators (a test builds one
with openapi-python-client) and schema fuzzers (tests/server/test_schema_fuzz.py) see the
real contract:

* one error envelope, the ``Error`` component (codes from the one table), as every
  operation's ``default`` response and as its explicit 4xx: 400 where it takes
  parameters or a body, 401 and 403 where it needs a token, 404 where its path names
  something, 413 where it takes a body; no 422;
* bearer auth: the ``bearer`` security scheme on every operation but the open ones
  (``auth/guard.py``'s ``OPEN_ROUTES``), as ``[{bearer: []}, {}]`` — a token, or none
  where the registry runs with ``WREG_AUTH=off`` (the default) or anonymous pulls;
* binary bodies (chunks, batches of frames) as ``type: string, format: binary``;
* patterns on path parameters, and operation ids named after the route functions
  (``list_repositories``; a HEAD sharing its function with a GET: ``get_manifest_head``).

``/docs`` (Swagger UI over that schema) is served from the files of the
``swagger-ui-bundle`` package under ``/docs/static``, not from a CDN, so it works on a
registry with no way out to the internet. (ReDoc has no such package: no ``/redoc``.)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from wreg.core.digest import DIGEST_PATTERN
from wreg.core.errors import ErrorCode
from wreg.core.reference import NAME_PATTERN, TAG_PATTERN
from wreg_server.auth.guard import OPEN_ROUTES

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
ERROR: Final = "Error"  # the component every error response refers to
BEARER: Final = "bearer"
BEARER_SCHEME: Final[dict[str, Any]] = {
    "type": "http",
    "scheme": "bearer",
    "description": "a token from `wreg-server token create` or POST /v1/tokens; needed "
    "once the registry runs with WREG_AUTH=on (pulls without one: WREG_ANONYMOUS_PULL)",
}
# A bearer token, or none: what a registry asks for depends on WREG_AUTH (default off,
# the quickstart's) and WREG_ANONYMOUS_PULL, which the schema cannot know.
SECURITY: Final[list[dict[str, list[str]]]] = [{BEARER: []}, {}]
# The explicit error responses and when an operation gets each (``_errors_of``).
ERROR_RESPONSES: Final = {
    "400": "invalid request: a malformed name, digest, tag or body",
    "401": "no token, or one that is unknown, expired or revoked (WREG_AUTH=on)",
    "403": "the token lacks the scope this needs",
    "404": "no such repository, manifest, tag, chunk or token (or not visible to the token)",
    "413": "the body is over its limit",
}
_METHODS = {"get", "put", "post", "delete", "head", "patch"}
_BINARY: Final = {"type": "string", "format": "binary"}
_NON_WORD: Final = re.compile(r"\W")  # as FastAPI's generate_unique_id
DOCS: Final = "/docs"
DOCS_STATIC: Final = "/docs/static"


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
    install_docs(app)


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs with its files from the ``swagger-ui-bundle`` package.

    Plain Starlette routes, as FastAPI's own docs route is: no token needed (auth/guard.py).
    The app must be built with ``docs_url=None``.
    """
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        static = f"{root}{DOCS_STATIC}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            # No badge fetched from validator.swagger.io (offline, and it would leak the URL).
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_route(DOCS, docs, include_in_schema=False)
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_path), name="swagger-ui")


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite FastAPI's generated ``schema`` in place (see the module docstring)."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas[ERROR] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})[BEARER] = BEARER_SCHEME
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}}
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if method not in _METHODS:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in _errors_of(path, op):
                responses.setdefault(status, {"description": ERROR_RESPONSES[status]})
            responses["default"] = {"description": "error"}
            for status, response in responses.items():
                if status == "default" or status.startswith(("4", "5")):
                    response["content"] = error
                else:
                    _binary_content(response.get("content", {}))
            _binary_content(op.get("requestBody", {}).get("content", {}))
            if path not in OPEN_ROUTES:
                op["security"] = SECURITY
            for param in op.get("parameters", []):
                pattern = PATH_PATTERNS.get(param["name"])
                if pattern is not None and param["in"] in ("path", "query"):
                    param["schema"] = {
                        **param.get("schema", {}),
                        "type": "string",
                        "pattern": pattern,
                    }
    _name_operations(schema)
    return schema


def _errors_of(path: str, op: dict[str, Any]) -> list[str]:
    """The explicit 4xx statuses of operation ``op`` on ``path``."""
    found = []
    if op.get("parameters") or "requestBody" in op:
        found.append("400")
    if path not in OPEN_ROUTES:
        found += ["401", "403"]
    if any(p["in"] == "path" for p in op.get("parameters", [])):
        found.append("404")
    if "requestBody" in op:
        found.append("413")
    return found


def _binary_content(content: dict[str, Any]) -> None:
    """Give each non-JSON body of ``content`` without a schema a binary (or text) one."""
    for media_type, body in content.items():
        if media_type == "application/json" or media_type.endswith("+json"):
            continue
        if not body.get("schema"):
            body["schema"] = {"type": "string"} if media_type == "text/plain" else _BINARY


def _name_operations(schema: dict[str, Any]) -> None:
    """``list_repositories`` for FastAPI's ``list_repositories_v1_repositories_get``: the
    route function's name; where two methods share one, the non-GET gets ``_<method>``."""
    named: list[tuple[str, str, dict[str, Any]]] = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            suffix = "_".join((_NON_WORD.sub("_", path), method))
            current = str(op.get("operationId", ""))
            if method in _METHODS and current.endswith(suffix) and current != suffix:
                named.append((current.removesuffix(suffix), method, op))
    counts = Counter(name for name, _, _ in named)
    for name, method, op in named:
        op["operationId"] = name if counts[name] == 1 or method == "get" else f"{name}_{method}"
