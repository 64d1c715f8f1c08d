"""The Hugging Face write API: ``upload_folder``, ``upload_file``, ``push_to_hub`` unchanged.

    POST /api/repos/create                          create_repo (exist_ok: 409 + url)
    POST /api/validate-yaml                         the model card check: always fine
    POST /api/models/{repo_id}/preupload/{revision} how each file travels: inline
    POST /api/models/{repo_id}/commit/{revision}    the commit (NDJSON), chunked on arrival
    POST /{repo_id}.git/info/lfs/objects/batch       git-lfs batch: signed upload URLs
    PUT  /api/lfs/{repo_id}/{oid}                   one LFS object, chunked on arrival

How files travel: huggingface_hub 2.4 decides Xet against LFS on its own side (it uses
Xet whenever the ``hf_xet`` package is installed, which it is by default), and sends a
file inline in the commit body when the server answers ``uploadMode: "regular"``. So
preupload answers ``regular`` for every file: it is the one mode every client
configuration supports without Xet. The commit body is spooled to a temporary file under
the data directory (bounded by ``WREG_HF_MAX_COMMIT_BYTES``, the body deadlines of
``api/body.py`` apply), never held in memory: it is read through ``mmap``, and each
file's base64 content is decoded in blocks into a file of its own, which is then cut,
encoded and stored like a push (``domain/ingest.py``) and hashed (sha256 for the ETag).

Inline costs the client memory (it base64-encodes each file whole), so for large
checkpoints ``WREG_HF_LFS_MIN_BYTES`` makes preupload answer ``lfs`` for files that
large: a client with ``HF_HUB_DISABLE_XET=1`` then streams each one in a ``PUT`` to a
URL the batch endpoint signed, and names it by sha256 in the commit (``lfsFile``).

A commit builds on its revision's current manifest: the files it adds or replaces, less
those it deletes; ``parentCommit``, when sent, must be the revision's current commit
(else 412). Commits to one revision are serialised in the process, and the tag moves
only if it still points at the parent (``Precondition``), so a concurrent commit through
another replica fails rather than being lost.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import mmap
import os
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from anyio import to_thread
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, Response

from wreg.core import hf
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import FileEntry, Manifest, validate_path
from wreg.core.sizes import MAX_JSON_BODY, MAX_MANIFEST_FILES
from wreg_server.api.body import iter_limited, read_limited
from wreg_server.api.deps import SessionDep, SettingsDep, StoreDep, VisibilityDep
from wreg_server.auth import signed
from wreg_server.auth.guard import PrincipalDep
from wreg_server.domain import filehashes, ingest, lfs, manifests, tags
from wreg_server.hf.errors import HfError, HfRoute
from wreg_server.hf.snapshots import Snapshot, name_or_404, resolve
from wreg_server.objectstore import ObjectStore
from wreg_server.settings import ServerSettings

router = APIRouter(route_class=HfRoute, tags=["huggingface"], include_in_schema=False)

SMALL_LINE: Final = 1 << 20
"""NDJSON lines up to this size are parsed whole; longer ones must be inline files."""
_DECODE_BLOCK: Final = 4 << 20  # base64 characters decoded per step (a multiple of 4)
_FILE_PREFIX: Final = b'{"key": "file", "value": {"content": "'
# One lock per revision being committed to; a lock no commit holds or awaits is dropped.
_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _bad(message: str) -> HfError:
    return HfError(400, None, message)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise _bad("request body is not JSON") from None
    if not isinstance(doc, dict):
        raise _bad("request body must be a JSON object")
    return doc


@router.post("/api/repos/create")
async def create_repo(request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    """``create_repo``: wreg repositories exist from their first commit, so this only
    checks the name and the caller's push scope, and says whether it exists (409 + url,
    which ``exist_ok=True`` accepts)."""
    doc = _json_object(await read_limited(request, MAX_JSON_BODY))
    name, org, kind = doc.get("name"), doc.get("organization"), doc.get("type", "model")
    if not isinstance(name, str) or not (org is None or isinstance(org, str)):
        raise _bad("create needs a name (and optionally an organization)")
    if kind != "model":
        raise _bad(f"wreg holds models only, not {kind!r} repositories")
    repo_id = f"{org}/{name}" if org else name
    mapped = hf.name_of(repo_id)
    if mapped is None or not principal.can("push", mapped):
        raise HfError(403, None, f"token may not create {repo_id!r} (needs push on it)")
    url = f"{_base_url(request)}/{repo_id}"
    try:
        await manifests.find(session, mapped, tag=hf.tag_of(hf.DEFAULT_REVISION))
    except WregError as exc:
        if exc.code is not ErrorCode.NAME_UNKNOWN:
            raise
        return JSONResponse({"url": url, "name": repo_id})
    return JSONResponse({"error": "You already created this model repo", "url": url}, 409)


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> Response:
    """The model card check ``upload_folder`` runs on README.md: wreg keeps cards as files."""
    await read_limited(request, MAX_JSON_BODY)
    return JSONResponse({"errors": [], "warnings": []})


@router.post("/api/models/{repo_id:hfid}/preupload/{revision}")
async def preupload(
    repo_id: str, revision: str, request: Request, settings: SettingsDep
) -> Response:
    """Files go inline, or over LFS from ``WREG_HF_LFS_MIN_BYTES`` on (module docstring);
    nothing is skipped."""
    name_or_404(repo_id)
    lfs_from = settings.hf_lfs_min_bytes
    doc = _json_object(await read_limited(request, MAX_JSON_BODY))
    files = doc.get("files")
    if not isinstance(files, list) or len(files) > MAX_MANIFEST_FILES:
        raise _bad(f"preupload needs a list of at most {MAX_MANIFEST_FILES} files")
    out = []
    for item in files:
        path = item.get("path") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if not isinstance(path, str) or not isinstance(size, int):
            raise _bad("every preupload file needs a path and a size")
        mode = "lfs" if 0 < lfs_from <= size else "regular"
        out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": None})
    return JSONResponse({"files": out})


@dataclass
class _Commit:
    """What one NDJSON commit body asks for."""

    summary: str = ""
    parent: str | None = None
    added: dict[str, Path] = field(default_factory=dict)
    lfs: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha256, size)
    deleted_files: set[str] = field(default_factory=set)
    deleted_folders: set[str] = field(default_factory=set)


def _clean_path(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("a commit operation needs a path")
    try:
        return validate_path(value.strip("/"))
    except WregError as exc:
        raise _bad(f"unsafe path in commit: {exc.message}") from None


def _decode_inline(mm: mmap.mmap, start: int, end: int, into: Path) -> None:
    """Decode base64 ``mm[start:end]`` into the file ``into`` block by block."""
    with open(into, "wb") as out:
        at = start
        while at < end:
            stop = min(at + _DECODE_BLOCK, end)
            try:
                out.write(binascii.a2b_base64(mm[at:stop], strict_mode=True))
            except binascii.Error:
                raise _bad("inline file content is not valid base64") from None
            at = stop


def _parse(spooled: Path, scratch: Path) -> _Commit:
    """Parse the spooled NDJSON body (worker thread); inline files go to ``scratch``."""
    commit = _Commit()
    seen_header = False
    size = spooled.stat().st_size
    if size == 0:
        raise _bad("commit body is empty")
    with open(spooled, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos = 0
        while pos < size:
            nl = mm.find(b"\n", pos)
            end = size if nl < 0 else nl
            line_start, pos = pos, end + 1
            if end == line_start:
                continue
            content: tuple[int, int] | None = None
            if end - line_start <= SMALL_LINE:
                line = mm[line_start:end]
            elif mm[line_start : line_start + len(_FILE_PREFIX)] == _FILE_PREFIX:
                begin = line_start + len(_FILE_PREFIX)
                close = mm.find(b'"', begin, end)
                if close < 0 or close - begin < SMALL_LINE:
                    raise _bad("malformed inline file in commit")
                content = (begin, close)
                line = mm[line_start:begin] + mm[close:end]
                if len(line) > SMALL_LINE:
                    raise _bad("commit line too long")
            else:
                raise _bad(f"commit line longer than {SMALL_LINE} bytes")
            try:
                op = json.loads(line)
            except ValueError:
                raise _bad("commit body is not NDJSON") from None
            key = op.get("key") if isinstance(op, dict) else None
            value = op.get("value") if isinstance(op, dict) else None
            if not isinstance(value, dict):
                raise _bad("every commit line needs a key and a value")
            if key == "header":
                seen_header = True
                summary, parent = value.get("summary", ""), value.get("parentCommit")
                commit.summary = summary if isinstance(summary, str) else ""
                commit.parent = parent if isinstance(parent, str) else None
            elif key == "file":
                path = _clean_path(value.get("path"))
                if value.get("encoding", "base64") != "base64":
                    raise _bad("inline files must be base64")
                if len(commit.added) >= MAX_MANIFEST_FILES:
                    raise _bad(f"a commit adds at most {MAX_MANIFEST_FILES} files")
                into = scratch / str(len(commit.added))
                suffix = Path(path).suffix
                if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 16:
                    into = into.with_suffix(suffix)  # picks the chunker, as for a push
                if content is None:
                    data = value.get("content")
                    if not isinstance(data, str):
                        raise _bad("an inline file needs its content")
                    try:
                        into.write_bytes(binascii.a2b_base64(data, strict_mode=True))
                    except binascii.Error:
                        raise _bad("inline file content is not valid base64") from None
                else:
                    _decode_inline(mm, content[0], content[1], into)
                commit.added[path] = into
            elif key == "deletedFile":
                commit.deleted_files.add(_clean_path(value.get("path")))
            elif key == "deletedFolder":
                commit.deleted_folders.add(_clean_path(value.get("path")))
            elif key == "lfsFile":
                path = _clean_path(value.get("path"))
                oid, declared = value.get("oid"), value.get("size")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
                    raise _bad("an lfsFile needs a sha256 oid")
                if not isinstance(declared, int):
                    raise _bad("an lfsFile needs its size")
                if len(commit.added) + len(commit.lfs) >= MAX_MANIFEST_FILES:
                    raise _bad(f"a commit adds at most {MAX_MANIFEST_FILES} files")
                commit.lfs[path] = (oid, declared)
            else:
                raise _bad(f"unknown commit operation {key!r}")
    if not seen_header:
        raise _bad("commit body has no header line")
    return commit


async def _spool(request: Request, into: Path, limit: int) -> None:
    f = await to_thread.run_sync(open, into, "wb")
    try:
        async for part in iter_limited(request, limit):
            await to_thread.run_sync(f.write, part)
    finally:
        await to_thread.run_sync(f.close)


async def _current(
    session: AsyncSession, repo_id: str, name: str, revision: str
) -> Snapshot | None:
    try:
        return await resolve(session, repo_id, name, revision)
    except HfError as exc:
        if exc.status == 404:
            return None
        raise


def _kept(parent: Snapshot | None, commit: _Commit) -> list[FileEntry]:
    if parent is None:
        return []
    folders = tuple(f"{d}/" for d in commit.deleted_folders)
    return [
        f
        for f in parent.manifest.files
        if f.path not in commit.added
        and f.path not in commit.lfs
        and f.path not in commit.deleted_files
        and not f.path.startswith(folders)
    ]


async def _ingest_all(
    session: AsyncSession, store: ObjectStore, settings: ServerSettings, name: str, commit: _Commit
) -> list[FileEntry]:
    entries = []
    for path, spooled in commit.added.items():
        done = await ingest.ingest(
            session, store, spooled, through=name, max_raw=settings.max_chunk_raw
        )
        entry = FileEntry.of(path, done.chunks)
        await filehashes.record(session, entry.digest, done.sha256)
        entries.append(entry)
    uploaded = await lfs.find(session, name, (oid for oid, _ in commit.lfs.values()))
    for path, (oid, size) in commit.lfs.items():
        refs = uploaded.get(oid)
        if refs is None or sum(r.size for r in refs) != size:
            raise _bad(f"{path}: LFS object {oid} was not uploaded to this repository")
        entries.append(FileEntry.of(path, refs))
    return entries


@router.post("/api/models/{repo_id:hfid}/commit/{revision}")
async def commit(
    repo_id: str,
    revision: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    visibility: VisibilityDep,
) -> Response:
    """One HF commit: the parent's files, plus those added, less those deleted."""
    name = name_or_404(repo_id)
    tag = hf.tag_of(revision)
    if tag is None or hf.is_commit_id(revision):
        raise HfError(400, None, f"commits go to a branch (a wreg tag), not to {revision!r}")
    spool = settings.data / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="hf-commit-") as scratch:
        body = Path(scratch) / "body.ndjson"
        await _spool(request, body, settings.hf_max_commit_bytes)
        files = Path(scratch) / "files"
        files.mkdir()
        parsed = await to_thread.run_sync(_parse, body, files)
        os.unlink(body)
        lock = _locks.get((name, tag))
        if lock is None:
            lock = _locks[(name, tag)] = asyncio.Lock()
        async with lock:
            parent = await _current(session, repo_id, name, revision)
            if parsed.parent is not None and (parent is None or parsed.parent != parent.commit):
                raise HfError(412, None, f"{revision} is not at {parsed.parent} any more")
            added = await _ingest_all(session, store, settings, name, parsed)
            manifest = Manifest.build(
                [*_kept(parent, parsed), *added],
                {
                    "hf": {
                        "summary": parsed.summary[:1024],
                        "parent": parent.commit if parent else "",
                    }
                },
            )
            digest = manifest.digest
            await manifests.commit(
                session, name, digest, manifest.to_json_bytes(), visibility=visibility
            )
            precondition = tags.Precondition(
                if_match=(parent.digest,) if parent is not None else None,
                if_none_match=("*",) if parent is None else None,
            )
            try:
                await tags.put(session, name, tag, digest, precondition)
            except WregError as exc:
                if exc.code is ErrorCode.TAG_CONFLICT:
                    raise HfError(412, None, f"{revision} moved during the commit") from None
                raise
    commit_id = hf.commit_id(digest)
    return JSONResponse(
        {
            "success": True,
            "commitOid": commit_id,
            "commitUrl": f"{_base_url(request)}/{repo_id}/commit/{commit_id}",
            "commitMessage": parsed.summary,
        }
    )


LFS_MEDIA_TYPE: Final = "application/vnd.git-lfs+json"
MAX_LFS_OBJECTS: Final = 1000


@router.post("/{repo_id:hfid}.git/info/lfs/objects/batch")
async def lfs_batch(
    repo_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    """The git-lfs batch API (upload only): a signed ``PUT`` URL for each object this
    repository does not hold yet (the client's PUT carries no token: ``auth/signed.py``);
    held objects get no ``actions``, so the client skips them."""
    name = name_or_404(repo_id)
    doc = _json_object(await read_limited(request, MAX_JSON_BODY))
    objects = doc.get("objects")
    if doc.get("operation") != "upload":
        raise _bad("this endpoint takes uploads; downloads go through /resolve")
    if not isinstance(objects, list) or len(objects) > MAX_LFS_OBJECTS:
        raise _bad(f"a batch names at most {MAX_LFS_OBJECTS} objects")
    wanted: list[tuple[str, int]] = []
    for asked in objects:
        oid = asked.get("oid") if isinstance(asked, dict) else None
        size = asked.get("size") if isinstance(asked, dict) else None
        if not isinstance(oid, str) or not isinstance(size, int) or size < 0:
            raise _bad("every LFS object needs an oid and a size")
        if size > settings.hf_max_commit_bytes:
            raise HfError(413, None, f"object {oid} is larger than WREG_HF_MAX_COMMIT_BYTES")
        wanted.append((hf.validate_sha256(oid), size))
    held = await lfs.find(session, name, (oid for oid, _ in wanted))
    out: list[dict[str, Any]] = []
    for oid, size in wanted:
        item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if oid not in held:
            path = f"/api/lfs/{repo_id}/{oid}"
            query = signed.sign(settings.hf_upload_secret, path, size)
            item["actions"] = {"upload": {"href": f"{_base_url(request)}{path}?{query}"}}
        out.append(item)
    return JSONResponse(
        {"transfer": "basic", "objects": out, "hash_algo": "sha256"},
        media_type=LFS_MEDIA_TYPE,
    )


@router.put("/api/lfs/{repo_id:hfid}/{oid}")
async def lfs_upload(
    repo_id: str,
    oid: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """One LFS object's bytes, at the URL the batch signed (the guard checked it):
    spooled, checked against the signed size and the sha256, chunked and stored."""
    name = name_or_404(repo_id)
    size = int(request.query_params["size"])
    spool = settings.data / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="hf-lfs-") as scratch:
        into = Path(scratch) / "object"
        await _spool(request, into, size)
        got = into.stat().st_size
        if got != size:
            raise _bad(f"object {oid}: {got} bytes received, {size} declared")
        done = await ingest.ingest(
            session, store, into, through=name, max_raw=settings.max_chunk_raw
        )
    if done.sha256 != oid:
        raise _bad(f"object {oid}: the bytes received hash to {done.sha256}")
    await filehashes.record(session, FileEntry.of("object", done.chunks).digest, done.sha256)
    await lfs.record(session, name, oid, done.chunks)
    return Response(status_code=200)
