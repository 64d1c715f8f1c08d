"""Snapshots: an HF repository id and revision resolved to one wreg manifest.

The mapping rules live in ``wreg.core.hf`` (ids lowercased, ``main`` is ``latest``,
commit ids are the first 40 hex digits of a manifest digest). A 40-hex revision that is
no manifest's commit id may still be a tag: the mirror tags what it imports with the
upstream commit id, so a client pinned to an upstream commit finds it offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from wreg.core import hf
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import FileEntry, Manifest
from wreg_server.domain import manifests
from wreg_server.hf.errors import HfError, repo_not_found, revision_not_found


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One manifest as an HF client sees it."""

    repo_id: str
    name: str
    digest: str
    manifest: Manifest
    created_at: datetime

    @property
    def commit(self) -> str:
        """The commit id clients see: the upstream's for a mirrored snapshot (the mirror
        tags it with that id, so it resolves back), else derived from the digest."""
        mirrored = self.upstream
        commit = mirrored.get("commit")
        if "upstream" in mirrored and commit is not None and hf.is_commit_id(commit):
            return commit
        return hf.commit_id(self.digest)

    def file(self, path: str) -> FileEntry | None:
        for entry in self.manifest.files:
            if entry.path == path:
                return entry
        return None

    @property
    def upstream(self) -> dict[str, str]:
        """What the manifest records of where it came from (mirror, ``import-hf``)."""
        info = self.manifest.metadata.get("hf")
        return (
            {k: v for k, v in info.items() if isinstance(v, str)} if isinstance(info, dict) else {}
        )


def name_or_404(repo_id: str, anonymous: bool = False) -> str:
    name = hf.name_of(repo_id)
    if name is None:
        raise repo_not_found(repo_id, anonymous=anonymous)
    return name


async def resolve(session: AsyncSession, repo_id: str, name: str, revision: str) -> Snapshot:
    """The manifest ``revision`` names in repository ``name``; raises ``HfError``."""
    try:
        found = []
        if hf.is_commit_id(revision):
            found = await manifests.find(session, name, prefix=hf.digest_prefix(revision))
            if len(found) > 1:  # two manifests sharing 160 bits of blake3: refuse, never guess
                raise HfError(409, None, f"commit id {revision} is ambiguous in {repo_id}")
        if not found:
            tag = hf.tag_of(revision)
            if tag is None:
                raise revision_not_found(repo_id, revision)
            found = await manifests.find(session, name, tag=tag)
    except WregError as exc:
        if exc.code is ErrorCode.NAME_UNKNOWN:
            raise repo_not_found(repo_id) from None
        raise
    if not found:
        raise revision_not_found(repo_id, revision)
    row = found[0]
    assert row.created_at is not None  # noqa: S101 - narrows: find() always sets it
    return Snapshot(repo_id, name, row.digest, parsed(row.digest, row.body), row.created_at)


_PARSED: dict[str, tuple[Manifest, int]] = {}
_PARSED_BYTES: Final = 64 << 20
"""Manifest bytes whose parsed form is kept (the most recently parsed first to go last)."""


def parsed(digest: str, body: bytes) -> Manifest:
    """The manifest ``body`` parses to, kept while the kept bodies total at most
    ``_PARSED_BYTES`` (a manifest is immutable, and parsing a large one costs more than
    the request)."""
    hit = _PARSED.pop(digest, None)
    manifest = hit[0] if hit is not None else Manifest.from_json_bytes(body)
    _PARSED[digest] = (manifest, len(body))  # re-inserted: most recently used last
    while sum(n for _, n in _PARSED.values()) > _PARSED_BYTES and len(_PARSED) > 1:
        _PARSED.pop(next(iter(_PARSED)))
    return manifest
