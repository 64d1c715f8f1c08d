"""The web UI's routes: server-rendered Jinja2 pages, read-only GETs, two POSTs.

Who is looking (``viewer``): with auth off, everyone sees everything; with auth on, the
token in the ``wreg_ui`` cookie (set by the login form), else anonymous if anonymous
pull is on, else the login page. A repository the viewer may not pull is answered
exactly like one that does not exist (404), so the UI reveals no names.

The cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it), ``Path=/ui`` (the browser sends it nowhere else), ``Secure`` over TLS.
The two POSTs (login, logout) must carry the form's CSRF token, an HMAC of a random
nonce held in a second cookie (double submit), and come from this origin (``Origin``,
else ``Referer``); anything else is 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from wreg.core import diff as core_diff
from wreg.core.digest import PREFIX, validate_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import Manifest
from wreg.core.reference import validate_name, validate_tag
from wreg.core.tensors import ManifestDescription
from wreg_server.api.deps import SessionDep
from wreg_server.auth.guard import UI_PREFIX, principal_of
from wreg_server.auth.scopes import Principal
from wreg_server.context import get_context
from wreg_server.domain import inspect, manifests, storage, tags
from wreg_server.objectstore import ObjectStore
from wreg_server.ui import views

COOKIE: Final = "wreg_ui"
CSRF_COOKIE: Final = "wreg_ui_csrf"
MAX_TOKEN_CHARS: Final = 512
MAX_FORM_BYTES: Final = 4096
MAX_QUERY_CHARS: Final = 128  # a tag is at most 128 characters (db.models.TAG_LENGTH)
MAX_SEARCH_CHARS: Final = 255  # a repository name is at most 255
PAGE_SIZE: Final = 100
MAX_TENSOR_ROWS: Final = 2000  # per file on the manifest page, and changed ones in a diff

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["bytes"] = views.human_bytes
_env.filters["short"] = views.short_digest
_env.filters["when"] = views.when

_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)


# -- who is looking ------------------------------------------------------------------


async def viewer(request: Request) -> Principal | None:
    """The principal the UI acts for (module docstring); None: must log in."""
    context = get_context(request)
    if not context.settings.auth_enabled:
        return Principal.unrestricted()
    token = request.cookies.get(COOKIE)
    if token and _plausible_token(token):
        principal = await principal_of(request, context, token)
        if principal is not None:
            return principal
    return Principal.anonymous() if context.settings.anonymous_pull else None


def _plausible_token(token: str) -> bool:
    return len(token) <= MAX_TOKEN_CHARS and token.isascii() and token.isprintable()


# -- CSRF --------------------------------------------------------------------------------


def _csrf_key(request: Request) -> bytes:
    # Replicas share hf_upload_secret (settings), so a form from one verifies on another.
    secret = get_context(request).settings.hf_upload_secret.encode()
    return hashlib.sha256(b"wreg-ui-csrf\0" + secret).digest()


def _csrf_token(request: Request, nonce: str) -> str:
    return hmac.new(_csrf_key(request), nonce.encode(), hashlib.sha256).hexdigest()


def _is_tls(request: Request) -> bool:
    """Whether this request came over TLS (uvicorn sets the scheme from the socket)."""
    return request.url.scheme == "https"


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def _same_origin(request: Request) -> bool:
    """``Origin`` (else ``Referer``) names this server; neither present: refused."""
    expected = _own_origin(request)
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == expected
    referer = request.headers.get("referer")
    if referer is None:
        return False
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}".lower() == expected


@dataclass(frozen=True, slots=True)
class Csrf:
    """This response's nonce (new if the request had none) and the form token for it."""

    nonce: str
    token: str
    fresh: bool


def _csrf(request: Request, *, renew: bool = False) -> Csrf:
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = renew or not nonce or len(nonce) > 64 or not nonce.isascii()
    if fresh or nonce is None:
        nonce = secrets.token_urlsafe(32)
    return Csrf(nonce, _csrf_token(request, nonce), fresh)


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=_is_tls(request),
    )


async def _checked_form(request: Request) -> dict[str, str]:
    """The POST's form fields, once origin and CSRF token check out; else 403."""
    if not _same_origin(request):
        raise _Refused("the form was not submitted from this site (Origin/Referer)")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise _Refused("the form is not url-encoded ASCII") from None
    form = {k: v[0] for k, v in parsed.items() if v}
    nonce = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    if not nonce or not hmac.compare_digest(sent.encode(), _csrf_token(request, nonce).encode()):
        raise _Refused("the form's CSRF token is missing or wrong: reload the page")
    return form


class _Refused(Exception):
    """A POST that fails the origin or CSRF check: 403."""


# -- rendering ---------------------------------------------------------------------------


def _render(
    request: Request,
    template: str,
    principal: Principal | None,
    status: int = 200,
    *,
    renew_csrf: bool = False,
    started: float | None = None,
    **values: Any,
) -> HTMLResponse:
    csrf = _csrf(request, renew=renew_csrf)
    context = get_context(request)
    html = _env.get_template(template).render(
        ui=UI_PREFIX,
        viewer=principal,
        auth_enabled=context.settings.auth_enabled,
        csrf=csrf.token,
        **values,
    )
    response = HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)
    if csrf.fresh:
        _set_cookie(request, response, CSRF_COOKIE, csrf.nonce)
    if started is not None:
        response.headers["Server-Timing"] = (
            f"render;dur={(time.perf_counter() - started) * 1e3:.1f}"
        )
    return response


def _error(
    request: Request, principal: Principal | None, status: int, message: str
) -> HTMLResponse:
    return _render(request, "error.html", principal, status, status_code=status, message=message)


def _not_found(request: Request, principal: Principal | None, what: str) -> HTMLResponse:
    return _error(request, principal, 404, f"{what} not found (or not visible to this token)")


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/login", status_code=303, headers=_SECURITY_HEADERS)


def _href(path: str, **query: str | None) -> str:
    kept = {k: v for k, v in query.items() if v}
    return f"{UI_PREFIX}{path}" + (f"?{urlencode(kept)}" if kept else "")


def _bounded(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and len(value) > limit:
        raise ErrorCode.NAME_INVALID.error(f"{what} is longer than {limit} characters")
    return value or None


def _wreg_error(request: Request, principal: Principal | None, error: WregError) -> HTMLResponse:
    status = error.code.status or 400
    if status == 404:
        return _not_found(request, principal, "repository, tag or manifest")
    return _error(request, principal, status, error.message)


# -- pages -------------------------------------------------------------------------------


@router.get("/static/ui.css")
async def stylesheet() -> Response:
    css = (STATIC / "ui.css").read_bytes()
    return Response(
        css,
        media_type="text/css",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/")
async def trailing_slash() -> Response:
    """``/ui/`` → ``/ui`` (a fixed target: nothing from the request goes into it)."""
    return RedirectResponse(UI_PREFIX, status_code=308, headers=_SECURITY_HEADERS)


@router.get("/login")
async def login_page(request: Request) -> Response:
    principal = await viewer(request)
    return _render(request, "login.html", principal, message=None)


@router.post("/login")
async def login(request: Request) -> Response:
    try:
        form = await _checked_form(request)
    except _Refused as exc:
        return _error(request, None, 403, str(exc))
    context = get_context(request)
    if not context.settings.auth_enabled:
        return RedirectResponse(UI_PREFIX, status_code=303, headers=_SECURITY_HEADERS)
    token = form.get("token", "").strip()
    principal = None
    if token and _plausible_token(token):
        principal = await principal_of(request, context, token)
    if principal is None:
        return _render(
            request, "login.html", None, 401, message="That token is unknown or revoked."
        )
    response = RedirectResponse(UI_PREFIX, status_code=303, headers=_SECURITY_HEADERS)
    _set_cookie(request, response, COOKIE, token)
    # A new nonce for the new session: a form token seen before login is worthless after.
    _set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        await _checked_form(request)
    except _Refused as exc:
        return _error(request, None, 403, str(exc))
    response = _to_login(request)
    response.delete_cookie(
        COOKIE, path=UI_PREFIX, httponly=True, samesite="strict", secure=_is_tls(request)
    )
    return response


@router.get("")
async def repositories_page(
    request: Request, session: SessionDep, q: str | None = None
) -> Response:
    started = time.perf_counter()
    principal = await viewer(request)
    if principal is None:
        return _to_login(request)
    try:
        search = _bounded(q, MAX_SEARCH_CHARS, "the search")
    except WregError as exc:
        return _wreg_error(request, principal, exc)
    usages = [
        u for u in await storage.by_repository(session) if principal.can("pull", u.name or "")
    ]
    shown = [u for u in usages if not search or search.lower() in (u.name or "")]
    return _render(
        request,
        "repositories.html",
        principal,
        started=started,
        repositories=shown,
        total=len(usages),
        q=search or "",
        href=_href,
    )


@router.get("/repository")
async def repository_page(
    request: Request,
    session: SessionDep,
    name: str = "",
    q: str | None = None,
    after: str | None = None,
) -> Response:
    started = time.perf_counter()
    principal = await viewer(request)
    if principal is None:
        return _to_login(request)
    try:
        validate_name(name)
        prefix = _bounded(q, MAX_QUERY_CHARS, "the tag search")
        cursor = _bounded(after, MAX_QUERY_CHARS, "the page cursor")
        if not principal.can("pull", name):
            return _not_found(request, principal, f"repository {name!r}")
        found, more = await tags.page(session, name, after=cursor, prefix=prefix, limit=PAGE_SIZE)
        count = await storage.tag_count(session, name, prefix)
    except WregError as exc:
        return _wreg_error(request, principal, exc)
    next_href = _href("/repository", name=name, q=prefix, after=found[-1].tag) if more else None
    first_href = _href("/repository", name=name, q=prefix) if cursor else None
    return _render(
        request,
        "repository.html",
        principal,
        started=started,
        name=name,
        tags=found,
        count=count,
        q=prefix or "",
        next_href=next_href,
        first_href=first_href,
        href=_href,
    )


def _validate_reference(reference: str) -> str:
    if reference.startswith(PREFIX):
        return validate_digest(reference)
    return validate_tag(reference)


async def _description(
    store: ObjectStore, name: str, digest: str, manifest: Manifest
) -> ManifestDescription | None:
    """The manifest's tensors, from its files' headers (``domain/inspect.py``: header
    chunks only, cached by file identity); None if they cannot be read: files only."""
    try:
        files = [await inspect.describe_file(store, entry) for entry in manifest.files]
    except WregError:
        return None
    return ManifestDescription(name, digest, None, None, dict(manifest.metadata), tuple(files))


@router.get("/manifest")
async def manifest_page(
    request: Request,
    session: SessionDep,
    name: str = "",
    ref: str = "",
    against: str | None = None,
) -> Response:
    started = time.perf_counter()
    principal = await viewer(request)
    if principal is None:
        return _to_login(request)
    try:
        validate_name(name)
        _validate_reference(ref)
        if against:
            _validate_reference(against)
        if not principal.can("pull", name):
            return _not_found(request, principal, f"repository {name!r}")
        found = await manifests.resolve(session, name, ref)
        manifest = Manifest.from_json_bytes(found.body)
        pushed = await storage.pushed(session, name, found.digest)
        store = get_context(request).store
        described = await _description(store, name, found.digest, manifest)
        diff = None
        diff_digest: str | None = None
        if against:
            base = await manifests.resolve(session, name, against)
            base_manifest = Manifest.from_json_bytes(base.body)
            base_described = await _description(store, name, base.digest, base_manifest)
            tensor_diff = None
            if described is not None and base_described is not None:
                tensor_diff = core_diff.diff(
                    core_diff.Described(against, base.digest, base_manifest, base_described),
                    core_diff.Described(ref, found.digest, manifest, described),
                )
            diff = views.diff(base_manifest, manifest, tensor_diff)
            diff_digest = base.digest
        choices, _ = await tags.page(session, name, limit=200)
    except WregError as exc:
        return _wreg_error(request, principal, exc)
    return _render(
        request,
        "manifest.html",
        principal,
        started=started,
        name=name,
        ref=ref,
        digest=found.digest,
        manifest=manifest,
        files=views.files_of(manifest),
        described=described,
        max_tensors=MAX_TENSOR_ROWS,
        changed_tensors=(
            views.changed_tensors(diff.tensors, MAX_TENSOR_ROWS) if diff and diff.tensors else []
        ),
        total_size=manifest.total_size,
        pushed=pushed,
        diff=diff,
        against=against or "",
        against_digest=diff_digest,
        choices=[t.tag for t in choices if t.tag != ref],
        href=_href,
    )


@router.get("/storage")
async def storage_page(request: Request, session: SessionDep) -> Response:
    started = time.perf_counter()
    principal = await viewer(request)
    if principal is None:
        return _to_login(request)
    usages = [
        u for u in await storage.by_repository(session) if principal.can("pull", u.name or "")
    ]
    total = await storage.totals(session, usages)
    return _render(
        request,
        "storage.html",
        principal,
        started=started,
        usages=usages,
        total=total,
        chart=views.chart(usages),
        href=_href,
    )
