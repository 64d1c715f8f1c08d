"""Hugging Face names in wreg terms: repository ids, revisions and commit ids.

The mapping rules (README, "Hugging Face clients"):

- **Repository ids.** An HF id (``Org/Model-Name``, ``gpt2``) names the wreg repository
  spelled the same in lowercase (``org/model-name``). HF compares ids case-insensitively
  too, so ``Org/Model`` and ``org/model`` are one repository; an id whose lowercase form
  is not a valid wreg name (``_x``, three segments, ``a--b``) names nothing.
- **Revisions.** ``main`` (what every HF client asks for by default) is wreg's default
  tag ``latest``; any other revision is a wreg tag of that name, or a commit id.
- **Commit ids.** HF clients want a 40-hex commit id for every revision and cache
  snapshots under it. A manifest's commit id is the first 40 hex digits of its digest
  (``blake3:<64 hex>``), so it is stable, derived from content, and resolves back by
  prefix; 160 bits make a collision between two manifests of one repository as unlikely
  as a SHA-1 collision in git.

Pure functions, no I/O: the server's HF API, its guard and ``wreg import-hf`` share them.
"""

from __future__ import annotations

import re
from typing import Final

from wreg.core.digest import PREFIX, hex_of
from wreg.core.errors import ErrorCode
from wreg.core.reference import DEFAULT_TAG, MAX_NAME_LENGTH, NAME_PATTERN, TAG_PATTERN
from wreg.core.sizes import MAX_PATH_LENGTH

DEFAULT_REVISION: Final = "main"
"""The revision HF clients ask for when given none; wreg's ``DEFAULT_TAG``."""
COMMIT_ID_LENGTH: Final = 40
MAX_REVISION_LENGTH: Final = 255
_COMMIT_RE: Final = re.compile(r"[0-9a-f]{40}")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_NAME_RE: Final = re.compile(NAME_PATTERN)
_TAG_RE: Final = re.compile(TAG_PATTERN)
# What an HF id may look like before it is mapped (huggingface_hub's own rule: word
# characters, '.', '-', at most one '/'), bounded before any other work.
_HF_ID_RE: Final = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(?:/[A-Za-z0-9][\w.-]{0,95})?")


def name_of(repo_id: str) -> str | None:
    """The wreg repository an HF repository id names, or None if it names none."""
    if len(repo_id) > MAX_NAME_LENGTH or not _HF_ID_RE.fullmatch(repo_id):
        return None
    name = repo_id.lower()
    if not _NAME_RE.fullmatch(name) or ".." in name or "--" in name:
        return None
    return name


def validate_repo_id(repo_id: str) -> str:
    """An HF repository id in a URL, checked for shape only (``name_of`` maps it)."""
    if len(repo_id) > 2 * 96 + 1 or not _HF_ID_RE.fullmatch(repo_id):
        raise ErrorCode.NAME_INVALID.error(f"invalid repository id {repo_id[:200]!r}")
    return repo_id


def validate_revision(revision: str) -> str:
    """A revision in a URL: bounded, printable, no slash (wreg has no refs/pr/N)."""
    if (
        not revision
        or len(revision) > MAX_REVISION_LENGTH
        or not revision.isprintable()
        or "/" in revision
    ):
        raise ErrorCode.TAG_INVALID.error(f"invalid revision {revision[:200]!r}")
    return revision


def validate_path_param(path: str) -> str:
    """A file or folder path in an HF URL: bounded and printable (whether the snapshot
    holds it is the route's question)."""
    if len(path) > MAX_PATH_LENGTH or not path.isprintable():
        raise ErrorCode.PATH_UNSAFE.error(f"invalid path {path[:200]!r}")
    return path


def validate_sha256(oid: str) -> str:
    """An LFS object id: a sha256 in lowercase hex."""
    if not _SHA256_RE.fullmatch(oid):
        raise ErrorCode.DIGEST_INVALID.error(f"invalid sha256 {oid[:80]!r}")
    return oid


def commit_id(manifest_digest: str) -> str:
    """The 40-hex commit id of a manifest (module docstring)."""
    return hex_of(manifest_digest)[:COMMIT_ID_LENGTH]


def is_commit_id(revision: str) -> bool:
    return _COMMIT_RE.fullmatch(revision) is not None


def digest_prefix(commit: str) -> str:
    """The prefix every digest whose commit id is ``commit`` starts with."""
    return PREFIX + commit


def tag_of(revision: str) -> str | None:
    """The wreg tag a (non-commit) revision names, or None if it cannot be one."""
    tag = DEFAULT_TAG if revision == DEFAULT_REVISION else revision
    if not _TAG_RE.fullmatch(tag) or tag.startswith("blake3"):
        return None
    return tag


def revision_of(tag: str) -> str:
    """The HF revision a wreg tag is shown as (``latest`` is ``main``)."""
    return DEFAULT_REVISION if tag == DEFAULT_TAG else tag
