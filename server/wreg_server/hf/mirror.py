"""Pull-through mirror: a repository wreg lacks is fetched from an upstream hub once.

With ``WREG_UPSTREAM_HF`` set (the public hub, another wreg, any HF-compatible endpoint),
a request for a repository or revision this registry does not hold, whose id the allow
and deny patterns admit, makes the server fetch that revision from upstream:

1. its commit (``GET /api/models/{id}/revision/{rev}``) and recursive file listing
   (``/tree/{commit}``, following ``Link: rel="next"`` on upstream's own host only);
2. every file (``/resolve/{commit}/{path}``), spooled to a temporary file under the data
   directory, its size checked against the listing and its sha256 against the listing's
   LFS oid where upstream gives one;
3. each file chunked and stored like a push (``domain/ingest.py``), deduplicated against
   everything stored; then one manifest recording ``{"hf": {"repo_id", "commit",
   "revision", "upstream"}}`` is committed and tagged with the revision (``main`` →
   ``latest``) and with the upstream commit id, so a client pinned to that commit finds
   it too.

From then on the repository is served from wreg alone: upstream is never asked again
for that revision (offline-safe; a newer upstream ``main`` is not seen until the tag is
removed). Concurrent requests for the same revision share one fetch (one per server
process). Everything upstream declares is bounded before it is trusted: JSON sizes,
file count (``MAX_MANIFEST_FILES``), paths (``validate_path``), total bytes
(``WREG_UPSTREAM_HF_MAX_BYTES``), and each body against its declared size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote, urlsplit

import anyio
import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wreg.core import hf
from wreg.core.errors import WregError
from wreg.core.manifest import FileEntry, Manifest, validate_path
from wreg.core.sizes import MAX_MANIFEST_FILES
from wreg_server.domain import filehashes, ingest, manifests
from wreg_server.domain.access import Visibility
from wreg_server.hf.errors import HfError, repo_not_found, revision_not_found
from wreg_server.objectstore import ObjectStore
from wreg_server.settings import ServerSettings

log = logging.getLogger(__name__)

MAX_INFO_BYTES: Final = 16 << 20
"""Largest JSON document (model info, one tree page) read from upstream."""
MAX_PAGES: Final = 1000
_SUFFIX: Final = re.compile(r"\.[A-Za-z0-9]{1,16}")


def _patterns(text: str) -> list[str]:
    return [p.strip().lower() for p in text.split(",") if p.strip()]


@dataclass(frozen=True, slots=True)
class _Listed:
    path: str
    size: int
    sha256: str | None


class Mirror:
    """The app's pull-through mirror (module docstring); one per process."""

    def __init__(
        self,
        settings: ServerSettings,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
    ) -> None:
        self.upstream = settings.upstream_hf.rstrip("/")
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._allow = _patterns(settings.upstream_hf_allow)
        self._deny = _patterns(settings.upstream_hf_deny)
        headers = {"User-Agent": "wreg-mirror"}
        if settings.upstream_hf_token:
            headers["Authorization"] = f"Bearer {settings.upstream_hf_token}"
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.upstream_hf_timeout),
            follow_redirects=True,
            max_redirects=5,
        )
        self._fetches: dict[tuple[str, str], asyncio.Task[None]] = {}

    def allows(self, repo_id: str) -> bool:
        """Whether ``repo_id`` may be mirrored (allow patterns, then deny patterns)."""
        rid = repo_id.lower()
        return any(fnmatchcase(rid, p) for p in self._allow) and not any(
            fnmatchcase(rid, p) for p in self._deny
        )

    async def fetch(self, repo_id: str, name: str, revision: str) -> None:
        """Import ``revision`` of ``repo_id`` into ``name`` (once, however many ask)."""
        key = (name, revision)
        task = self._fetches.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(repo_id, name, revision))
            self._fetches[key] = task
            task.add_done_callback(lambda _: self._fetches.pop(key, None))
        await asyncio.shield(task)

    async def close(self) -> None:
        for task in list(self._fetches.values()):
            task.cancel()
        await self._http.aclose()

    # -- upstream ------------------------------------------------------------------------

    async def _json(self, url: str, repo_id: str, revision: str) -> Any:
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code in (401, 403, 404):
                    code = response.headers.get("x-error-code")
                    if code == "RevisionNotFound":
                        raise revision_not_found(repo_id, revision)
                    raise repo_not_found(repo_id)
                response.raise_for_status()
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > MAX_INFO_BYTES:
                        raise HfError(502, None, f"upstream answer larger than {MAX_INFO_BYTES}")
                next_url = response.links.get("next", {}).get("url")
            doc = json.loads(body)
        except (httpx.HTTPError, ValueError) as exc:
            raise HfError(502, None, f"upstream {self.upstream} failed: {exc}") from None
        return doc, next_url

    def _same_host(self, url: str) -> bool:
        up, other = urlsplit(self.upstream), urlsplit(url)
        return (up.scheme, up.netloc) == (other.scheme, other.netloc)

    async def _listing(self, repo_id: str, commit: str) -> list[_Listed]:
        url: str | None = (
            f"{self.upstream}/api/models/{repo_id}/tree/{commit}?recursive=true&expand=false"
        )
        files: list[_Listed] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page, url = await self._json(url, repo_id, commit)
            if url is not None and not self._same_host(url):
                raise HfError(502, None, "upstream's next page is on another host")
            if not isinstance(page, list):
                raise HfError(502, None, "upstream tree listing is not a list")
            for item in page:
                if not isinstance(item, dict) or item.get("type") != "file":
                    continue
                path, size, lfs = item.get("path"), item.get("size"), item.get("lfs")
                if not isinstance(path, str) or not isinstance(size, int) or size < 0:
                    raise HfError(502, None, "upstream tree entry is malformed")
                try:
                    validate_path(path)
                except WregError as exc:
                    raise HfError(502, None, f"upstream path refused: {exc.message}") from None
                sha = lfs.get("oid") if isinstance(lfs, dict) else None
                files.append(_Listed(path, size, sha if isinstance(sha, str) else None))
                if len(files) > MAX_MANIFEST_FILES:
                    raise HfError(
                        502, None, f"upstream revision has over {MAX_MANIFEST_FILES} files"
                    )
        else:
            raise HfError(502, None, f"upstream tree listing has over {MAX_PAGES} pages")
        return files

    async def _download(self, url: str, want: _Listed, into: Path) -> str:
        """Spool one file to ``into``; returns its sha256 (checked against upstream's)."""
        sha = hashlib.sha256()
        got = 0
        try:
            async with self._http.stream("GET", url) as response:
                response.raise_for_status()
                async with await anyio.open_file(into, "wb") as out:
                    async for piece in response.aiter_bytes(1 << 20):
                        got += len(piece)
                        if got > want.size:
                            raise HfError(502, None, f"upstream sent more than {want.path}'s size")
                        sha.update(piece)
                        await out.write(piece)
        except httpx.HTTPError as exc:
            raise HfError(502, None, f"upstream download of {want.path} failed: {exc}") from None
        if got != want.size:
            raise HfError(502, None, f"upstream sent {got} of {want.size} bytes of {want.path}")
        digest = sha.hexdigest()
        if want.sha256 is not None and digest != want.sha256:
            raise HfError(502, None, f"upstream {want.path} does not match its sha256")
        return digest

    # -- the import ---------------------------------------------------------------------

    async def _fetch(self, repo_id: str, name: str, revision: str) -> None:
        info_url = f"{self.upstream}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        info, _ = await self._json(info_url, repo_id, revision)
        commit = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(commit, str) or not hf.is_commit_id(commit):
            raise HfError(502, None, "upstream model info has no commit id")
        listed = await self._listing(repo_id, commit)
        total = sum(f.size for f in listed)
        if total > self._settings.upstream_hf_max_bytes:
            raise HfError(
                413,
                None,
                f"{repo_id}@{revision} is {total} bytes, over the mirror's limit of "
                f"{self._settings.upstream_hf_max_bytes} (WREG_UPSTREAM_HF_MAX_BYTES)",
            )
        log.info(
            "mirroring %s@%s (%s, %d files, %d bytes)",
            repo_id,
            revision,
            commit,
            len(listed),
            total,
        )
        spool = self._settings.data / "tmp"
        spool.mkdir(parents=True, exist_ok=True)
        entries: list[FileEntry] = []
        hashes: dict[str, str] = {}
        with tempfile.TemporaryDirectory(dir=spool, prefix="mirror-") as scratch:
            for index, want in enumerate(listed):
                # The suffix picks the chunker (tensor-aligned for .safetensors), so the
                # chunks are the ones a `wreg push` of the same file makes.
                suffix = PurePosixPath(want.path).suffix
                into = Path(scratch) / (str(index) + (suffix if _SUFFIX.fullmatch(suffix) else ""))
                url = f"{self.upstream}/{repo_id}/resolve/{commit}/{quote(want.path)}"
                sha256 = await self._download(url, want, into)
                async with self._sessions() as session:
                    done = await ingest.ingest(
                        session,
                        self._store,
                        into,
                        through=name,
                        max_raw=self._settings.max_chunk_raw,
                    )
                os.unlink(into)
                entry = FileEntry.of(want.path, done.chunks)
                entries.append(entry)
                hashes[entry.digest] = sha256
        metadata = {
            "hf": {
                "repo_id": repo_id,
                "commit": commit,
                "revision": revision,
                "upstream": self.upstream,
            }
        }
        manifest = Manifest.build(entries, metadata)
        body = manifest.to_json_bytes()
        visibility = Visibility(self._settings.chunk_namespace)
        tags = [t for t in (hf.tag_of(revision), commit) if t is not None]
        async with self._sessions() as session:
            for identity, sha256 in hashes.items():
                await filehashes.record(session, identity, sha256)
            for tag in dict.fromkeys(tags):
                await manifests.commit(
                    session, name, manifest.digest, body, tag, visibility=visibility
                )
        log.info("mirrored %s@%s as %s@%s", repo_id, revision, name, manifest.digest)
