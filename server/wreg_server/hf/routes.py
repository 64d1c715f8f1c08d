"""The Hugging Face read API: what ``huggingface_hub`` needs to download from wreg.

    GET  /api/models/{repo_id}                          model info at ``main``
    GET  /api/models/{repo_id}/revision/{revision}      model info at a revision
    GET  /api/models/{repo_id}/tree/{revision}[/{path}] tree listing (recursive, paged)
    POST /api/models/{repo_id}/paths-info/{revision}    entries of the given paths
    HEAD /{repo_id}/resolve/{revision}/{path}           a file's headers
    GET  /{repo_id}/resolve/{revision}/{path}           a file's bytes (``Range`` → 206)

Auth is the guard's (``auth/guard.py``): ``HF_TOKEN`` is sent as ``Authorization:
Bearer`` and needs ``pull`` on the mapped repository; errors are ``hf/errors.py``'s.
Files are streamed from verified chunks (``domain/files.py``), never assembled.

Headers a client reads on ``resolve``: ``X-Repo-Commit`` (the snapshot it caches under),
``ETag`` and ``X-Linked-Etag`` (the blob name in its cache; the file's sha256 where the
server has computed it, ``domain/filehashes.py``, else a 40-hex id derived from the file
identity, which the client never mistakes for a sha256), ``X-Linked-Size`` and
``Content-Length``. Nothing redirects: the bytes come from this server.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, Response, StreamingResponse

from wreg.core import hf
from wreg.core.digest import hex_of
from wreg.core.manifest import FileEntry
from wreg.core.sizes import MAX_JSON_BODY
from wreg_server.api.body import read_limited
from wreg_server.api.caching import NO_STORE, immutable, revalidate
from wreg_server.api.deps import ContextDep, FileHasherDep, SessionDep
from wreg_server.context import AppContext, get_context
from wreg_server.domain import filehashes
from wreg_server.domain.filehashes import FileHasher
from wreg_server.domain.files import read_range
from wreg_server.hf.errors import (
    COMMIT_HEADER,
    REPO_NOT_FOUND,
    REVISION_NOT_FOUND,
    HfError,
    HfRoute,
    entry_not_found,
)
from wreg_server.hf.mirror import Mirror
from wreg_server.hf.snapshots import Snapshot, name_or_404, resolve

router = APIRouter(route_class=HfRoute, tags=["huggingface"], include_in_schema=False)

PAGE: Final = 1000
"""Tree entries per page (the Hub's own page size)."""
MAX_PATHS: Final = 1000
"""Paths one ``paths-info`` request may ask about."""
HASH_WAIT: Final = 5.0
"""Seconds a request waits for a file's sha256 still being computed."""
POINTER_SIZE: Final = 134
"""The size of a git-lfs pointer file, which the Hub reports for LFS files."""
MIRRORED: Final = frozenset({REPO_NOT_FOUND, REVISION_NOT_FOUND})
"""The errors a mirror answers by fetching from upstream."""
_RANGE_RE: Final = re.compile(r"bytes=(\d*)-(\d*)")


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _blob_id(entry: FileEntry) -> str:
    return hex_of(entry.digest)[: hf.COMMIT_ID_LENGTH]


async def _hashes(hasher: FileHasher, session: AsyncSession, snapshot: Snapshot) -> dict[str, str]:
    """identity → sha256 of the snapshot's files hashed so far; the rest are queued."""
    found = await filehashes.known(session, (f.digest for f in snapshot.manifest.files))
    hasher.schedule(f for f in snapshot.manifest.files if f.digest not in found)
    return found


def _file_json(entry: FileEntry, sha256: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "file",
        "oid": _blob_id(entry),
        "size": entry.size,
        "path": entry.path,
    }
    if sha256 is not None:
        out["lfs"] = {"oid": sha256, "size": entry.size, "pointerSize": POINTER_SIZE}
    return out


def _model_json(snapshot: Snapshot, private: bool, hashes: dict[str, str] | None) -> dict[str, Any]:
    siblings: list[dict[str, Any]] = []
    for entry in snapshot.manifest.files:
        sibling: dict[str, Any] = {"rfilename": entry.path}
        if hashes is not None:
            sibling["size"] = entry.size
            sibling["blobId"] = _blob_id(entry)
            sha256 = hashes.get(entry.digest)
            if sha256 is not None:
                sibling["lfs"] = {"size": entry.size, "sha256": sha256, "pointerSize": POINTER_SIZE}
        siblings.append(sibling)
    author, _, _ = snapshot.repo_id.rpartition("/")
    when = _iso(snapshot.created_at)
    return {
        "_id": snapshot.commit,
        "id": snapshot.repo_id,
        "modelId": snapshot.repo_id,
        "author": author or None,
        "sha": snapshot.commit,
        "lastModified": when,
        "createdAt": when,
        "private": private,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": snapshot.manifest.total_size,
    }


async def get_mirror(request: Request) -> Mirror | None:
    """The app's pull-through mirror, if ``WREG_UPSTREAM_HF`` is set (created on first use,
    closed by ``hf.close`` at shutdown). ``async`` so that it runs on the event loop, not
    in FastAPI's thread pool, where concurrent first requests would each build one."""
    state = request.app.state
    mirror = getattr(state, "hf_mirror", None)
    if mirror is None:
        context = get_context(request)
        if not context.settings.upstream_hf:
            return None
        mirror = state.hf_mirror = Mirror(context.settings, context.sessions, context.store)
    assert isinstance(mirror, Mirror)  # noqa: S101 - narrows app.state (set just above)
    return mirror


MirrorDep = Annotated[Mirror | None, Depends(get_mirror)]


async def _snapshot(
    mirror: Mirror | None, session: AsyncSession, repo_id: str, revision: str
) -> Snapshot:
    """The snapshot ``revision`` names, fetched from upstream first if this registry
    lacks it and the mirror may fetch it (``hf/mirror.py``)."""
    name = name_or_404(repo_id)
    try:
        return await resolve(session, repo_id, name, revision)
    except HfError as exc:
        if mirror is None or exc.code not in MIRRORED or not mirror.allows(repo_id):
            raise
    await session.rollback()  # end the read transaction: the fetch commits in its own
    await mirror.fetch(repo_id, name, revision)
    return await resolve(session, repo_id, name, revision)


def _private(context: AppContext) -> bool:
    return context.settings.auth_enabled and not context.settings.anonymous_pull


async def _model_info(
    context: AppContext,
    hasher: FileHasher,
    mirror: Mirror | None,
    session: AsyncSession,
    repo_id: str,
    revision: str,
    blobs: bool,
) -> JSONResponse:
    snapshot = await _snapshot(mirror, session, repo_id, revision)
    hashes = await _hashes(hasher, session, snapshot) if blobs else None
    return JSONResponse(
        _model_json(snapshot, _private(context), hashes),
        headers={"Cache-Control": NO_STORE, COMMIT_HEADER: snapshot.commit},
    )


@router.get("/api/models/{repo_id:hfid}")
async def model_info(
    repo_id: str,
    context: ContextDep,
    hasher: FileHasherDep,
    mirror: MirrorDep,
    session: SessionDep,
    blobs: bool = False,
) -> Response:
    """Model info at ``main`` (``HfApi.model_info``)."""
    return await _model_info(context, hasher, mirror, session, repo_id, hf.DEFAULT_REVISION, blobs)


@router.get("/api/models/{repo_id:hfid}/revision/{revision}")
async def model_info_at(
    repo_id: str,
    revision: str,
    context: ContextDep,
    hasher: FileHasherDep,
    mirror: MirrorDep,
    session: SessionDep,
    blobs: bool = False,
) -> Response:
    """Model info at ``revision`` (``model_info(revision=…)``, ``snapshot_download``)."""
    return await _model_info(context, hasher, mirror, session, repo_id, revision, blobs)


def _tree(entries: tuple[FileEntry, ...], path: str, recursive: bool) -> list[tuple[str, Any]]:
    """(path, file entry or None for a directory) under ``path``, sorted by path."""
    prefix = f"{path}/" if path else ""
    out: dict[str, FileEntry | None] = {}
    for entry in entries:
        if not entry.path.startswith(prefix):
            continue
        rest = entry.path[len(prefix) :]
        parts = rest.split("/")
        if recursive:
            for depth in range(1, len(parts)):
                out.setdefault(prefix + "/".join(parts[:depth]), None)
            out[entry.path] = entry
        elif len(parts) == 1:
            out[entry.path] = entry
        else:
            out.setdefault(prefix + parts[0], None)
    return sorted(out.items())


@router.get("/api/models/{repo_id:hfid}/tree/{revision}")
@router.get("/api/models/{repo_id:hfid}/tree/{revision}/{path:path}")
async def tree(
    repo_id: str,
    revision: str,
    request: Request,
    hasher: FileHasherDep,
    mirror: MirrorDep,
    session: SessionDep,
    path: str = "",
    recursive: bool = False,
    expand: bool = False,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """The files and folders under ``path`` (``list_repo_tree``, ``list_repo_files``),
    ``PAGE`` at a time; the next page's URL is in ``Link: <…>; rel="next"``."""
    snapshot = await _snapshot(mirror, session, repo_id, revision)
    path = path.strip("/")
    listing = _tree(snapshot.manifest.files, path, recursive)
    if path and not listing and snapshot.file(path) is None:
        raise entry_not_found(repo_id, path, snapshot.commit)
    if cursor is not None:
        listing = [item for item in listing if item[0] > cursor]
    page, more = listing[:PAGE], len(listing) > PAGE
    hashes = await _hashes(hasher, session, snapshot)
    body = [
        _file_json(entry, hashes.get(entry.digest))
        if entry is not None
        else {"type": "directory", "oid": snapshot.commit, "path": item}
        for item, entry in page
    ]
    headers = {COMMIT_HEADER: snapshot.commit, "Cache-Control": NO_STORE}
    if more:
        query = {"recursive": str(recursive).lower(), "expand": str(expand).lower()}
        query["cursor"] = page[-1][0]
        base = str(request.url.replace(query=""))
        headers["Link"] = f'<{base}?{urlencode(query)}>; rel="next"'
    return JSONResponse(body, headers=headers)


@router.post("/api/models/{repo_id:hfid}/paths-info/{revision}")
async def paths_info(
    repo_id: str,
    revision: str,
    request: Request,
    hasher: FileHasherDep,
    mirror: MirrorDep,
    session: SessionDep,
) -> Response:
    """The entries for the given paths (``get_paths_info``); unknown paths are left out."""
    snapshot = await _snapshot(mirror, session, repo_id, revision)
    body = await read_limited(request, MAX_JSON_BODY)
    paths = await _paths_of(request, body)
    by_path = {entry.path: entry for entry in snapshot.manifest.files}
    hashes = await _hashes(hasher, session, snapshot)
    out: list[dict[str, Any]] = []
    directories = {p.rsplit("/", 1)[0] for p in by_path if "/" in p}
    for wanted in dict.fromkeys(paths):
        entry = by_path.get(wanted)
        if entry is not None:
            out.append(_file_json(entry, hashes.get(entry.digest)))
        elif any(d == wanted or d.startswith(f"{wanted}/") for d in directories):
            out.append({"type": "directory", "oid": snapshot.commit, "path": wanted})
    return JSONResponse(out, headers={COMMIT_HEADER: snapshot.commit, "Cache-Control": NO_STORE})


async def _paths_of(request: Request, body: bytes) -> list[str]:
    """The ``paths`` of a paths-info body: form-encoded (what huggingface_hub sends) or JSON."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            doc = json.loads(body)
            paths = doc.get("paths") if isinstance(doc, dict) else None
        else:
            paths = parse_qs(body.decode(), max_num_fields=MAX_PATHS + 1).get("paths")
    except (ValueError, UnicodeDecodeError):
        raise HfError(400, None, "paths-info body is malformed") from None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise HfError(400, None, "paths-info needs a list of paths")
    if len(paths) > MAX_PATHS:
        raise HfError(400, None, f"paths-info takes at most {MAX_PATHS} paths")
    return [p.strip("/") for p in paths]


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a single-range ``Range`` header, None for the whole file (no
    header, or one this server answers whole: several ranges); raises 416."""
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None
    if start >= size or start >= stop:
        raise HfError(416, None, f"range {header} is outside the file ({size} bytes)")
    return start, stop


@router.head("/{repo_id:hfid}/resolve/{revision}/{path:path}")
@router.get("/{repo_id:hfid}/resolve/{revision}/{path:path}")
async def resolve_file(
    repo_id: str,
    revision: str,
    path: str,
    request: Request,
    context: ContextDep,
    hasher: FileHasherDep,
    mirror: MirrorDep,
    session: SessionDep,
) -> Response:
    """One file of a revision: headers (HEAD) or bytes (GET, ``Range`` honoured)."""
    snapshot = await _snapshot(mirror, session, repo_id, revision)
    entry = snapshot.file(path)
    if entry is None:
        raise entry_not_found(repo_id, path, snapshot.commit)
    sha256 = (await filehashes.known(session, [entry.digest])).get(entry.digest)
    if sha256 is None:
        sha256 = await hasher.wait(entry, HASH_WAIT)
    etag = f'"{sha256 if sha256 is not None else _blob_id(entry)}"'
    pinned = hf.is_commit_id(revision) and revision == snapshot.commit
    headers = {
        COMMIT_HEADER: snapshot.commit,
        "ETag": etag,
        "X-Linked-Etag": etag,
        "X-Linked-Size": str(entry.size),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        "Cache-Control": immutable(context.settings) if pinned else revalidate(context.settings),
    }
    try:
        span = _byte_range(request.headers.get("range"), entry.size)
    except HfError as exc:
        response = exc.response(request.method == "HEAD")
        response.headers["Content-Range"] = f"bytes */{entry.size}"
        return response
    start, stop = span if span is not None else (0, entry.size)
    headers["Content-Length"] = str(stop - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{entry.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(
        read_range(context.store, entry, start, stop), status_code=status, headers=headers
    )
