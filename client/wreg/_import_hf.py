"""``wreg import-hf``: find a Hugging Face snapshot on disk and list its files for a push.

huggingface_hub's cache (``HF_HUB_CACHE``, ``~/.cache/huggingface/hub``)::

    <hub>/models--{org}--{name}/
        refs/<revision>            a 40-hex commit id (text)
        snapshots/<commit>/<path>  relative symlinks into ../../blobs/<etag>
        blobs/<etag>               the content; <etag>.incomplete while downloading

A ``local_dir=`` download is the repository's files as a plain directory, plus
``.cache/huggingface/`` (``download/<path>.metadata``: commit, etag, time; lock and
``.incomplete`` files), which is never imported.

A snapshot's links lead out of the snapshot directory, so they are not scanned as a
push scans a directory: each is resolved here and the push reads the blob itself (no
copy). A resolved target must be a regular file under the repository's own ``blobs/``;
a link elsewhere, a dangling link or an unfinished download anywhere in ``blobs/``
refuses the whole import (``HF_SNAPSHOT_INVALID``), so a snapshot is never half-imported.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from wreg._push import _scan
from wreg.core import hf
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import MODE_EXEC, MODE_FILE
from wreg.core.reference import DEFAULT_TAG, Reference

REPO_PREFIX: Final = "models--"
METADATA_DIR: Final = ".cache/huggingface"
_INCOMPLETE: Final = ".incomplete"

ScannedFile = tuple[Path, str, int, os.stat_result]
"""(path the content is read from, POSIX path in the model, mode, stat of the content)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A snapshot to import: its files and what is known of where it came from."""

    root: Path
    """The snapshot or plain directory the files' paths are relative to."""
    files: list[ScannedFile]
    repo_id: str | None
    commit: str | None
    revision: str | None

    def metadata(self) -> dict[str, Any]:
        """The manifest metadata: ``{"hf": {...}}`` with the fields known, else nothing."""
        known = {
            k: v
            for k, v in (
                ("repo_id", self.repo_id),
                ("commit", self.commit),
                ("revision", self.revision),
            )
            if v is not None
        }
        return {"hf": known} if known else {}

    def default_reference(self) -> Reference:
        """``name_of(repo_id)@latest``; an error when there is no usable repository id."""
        if self.repo_id is None:
            raise ErrorCode.REFERENCE_INVALID.error(
                f"no Hugging Face repository id is known for {self.root}; give a REF "
                "(`wreg import-hf PATH team/model@v1`) or --repo-id Org/Name"
            )
        name = hf.name_of(self.repo_id)
        if name is None:
            raise ErrorCode.NAME_INVALID.error(
                f"Hugging Face id {self.repo_id!r} names no wreg repository; give a REF"
            )
        return Reference.parse(f"{name}@{DEFAULT_TAG}")


def locate(path: Path, *, repo_id: str | None = None, revision: str | None = None) -> Found:
    """The snapshot ``path`` names (``Client.import_hf`` lists the forms), its files listed.

    Raises ``LOCAL_PATH_MISSING`` for a path that is not a directory, ``LOCAL_EMPTY`` for
    a snapshot without files and ``HF_SNAPSHOT_INVALID`` for anything else wrong.
    """
    path = path.expanduser()
    if not path.is_dir():
        raise ErrorCode.LOCAL_PATH_MISSING.error(f"cannot import {path}: not a directory")
    if repo_id is not None:
        hf.validate_repo_id(repo_id)
    if revision is not None:
        _check_revision(revision)
    if _is_repo_dir(path):
        return _from_repo_dir(path, repo_id, revision)
    if path.parent.name == "snapshots" and _is_repo_dir(path.parent.parent):
        return _from_snapshot(path.parent.parent, path, repo_id, revision)
    hub = _hub_root(path)
    if hub is not None:
        if repo_id is None:
            raise _invalid(
                f"{path} is a Hugging Face cache: name the model with --repo-id Org/Name"
            )
        repo_dir = hub / (REPO_PREFIX + repo_id.replace("/", "--"))
        if not _is_repo_dir(repo_dir):
            raise _invalid(f"the cache {hub} holds no {repo_id!r} ({repo_dir.name} not found)")
        return _from_repo_dir(repo_dir, repo_id, revision)
    return _from_local_dir(path, repo_id, revision)


def _is_repo_dir(path: Path) -> bool:
    return (path / "snapshots").is_dir() and (path / "blobs").is_dir()


def _hub_root(path: Path) -> Path | None:
    """``path`` itself, or its ``hub/``, when it holds ``models--*`` repositories."""
    for hub in (path, path / "hub"):
        if hub.is_dir() and any(_is_repo_dir(p) for p in hub.glob(REPO_PREFIX + "*")):
            return hub
    return None


def _check_revision(revision: str) -> None:
    parts = revision.split("/")
    if not revision or not revision.isprintable() or any(p in ("", ".", "..") for p in parts):
        raise _invalid(f"invalid revision {revision[:200]!r}")


def _repo_id_of(repo_dir: Path, given: str | None) -> str | None:
    """``Org/Name`` from ``models--Org--Name`` (``--repo-id`` wins when given)."""
    if given is not None:
        return given
    name = repo_dir.resolve().name
    if not name.startswith(REPO_PREFIX):
        return None
    return name.removeprefix(REPO_PREFIX).replace("--", "/", 1)


def _read_ref(repo_dir: Path, revision: str) -> str | None:
    ref = repo_dir / "refs" / revision
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, UnicodeDecodeError):
        return None
    return commit if hf.is_commit_id(commit) else None


def _from_repo_dir(repo_dir: Path, repo_id: str | None, revision: str | None) -> Found:
    wanted = revision or hf.DEFAULT_REVISION
    commit = _read_ref(repo_dir, wanted)
    ref_name: str | None = wanted
    if commit is None and hf.is_commit_id(wanted):
        commit, ref_name = wanted, None
    if commit is None:
        raise _invalid(f"{repo_dir} has no revision {wanted!r} (no refs/{wanted})")
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        raise _invalid(f"{repo_dir}: revision {wanted!r} is commit {commit}, not in snapshots/")
    return Found(
        snapshot,
        _snapshot_files(repo_dir, snapshot),
        _repo_id_of(repo_dir, repo_id),
        commit,
        ref_name,
    )


def _from_snapshot(
    repo_dir: Path, snapshot: Path, repo_id: str | None, revision: str | None
) -> Found:
    commit = snapshot.name if hf.is_commit_id(snapshot.name) else None
    if revision is None and commit is not None:  # the ref naming this commit, main first
        refs = repo_dir / "refs"
        names = (
            sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file())
            if refs.is_dir()
            else []
        )
        names.sort(key=lambda n: n != hf.DEFAULT_REVISION)
        revision = next((n for n in names if _read_ref(repo_dir, n) == commit), None)
    return Found(
        snapshot,
        _snapshot_files(repo_dir, snapshot),
        _repo_id_of(repo_dir, repo_id),
        commit,
        revision,
    )


def _snapshot_files(repo_dir: Path, snapshot: Path) -> list[ScannedFile]:
    """Every file of ``snapshot``, read from the blob its link leads to."""
    blobs = (repo_dir / "blobs").resolve()
    unfinished = sorted(p.name for p in blobs.iterdir() if p.name.endswith(_INCOMPLETE))
    if unfinished:
        raise _invalid(
            f"a download into {repo_dir} is unfinished (blobs/{unfinished[0]}); "
            "let it finish (or remove it) and import again"
        )
    found: list[ScannedFile] = []
    for dirpath, dirnames, filenames in os.walk(snapshot):
        dirnames.sort()
        for name in sorted(
            [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]
        ):
            path = Path(dirpath) / name
            rel = path.relative_to(snapshot).as_posix()
            content = path
            if path.is_symlink():
                content = path.resolve()
                if not content.is_relative_to(blobs):
                    raise _invalid(
                        f"{rel} in {snapshot} links to {content}, outside {blobs}; not imported"
                    )
            try:
                st = content.stat()
            except FileNotFoundError:
                raise _invalid(
                    f"{rel} in {snapshot} leads nowhere (incomplete snapshot); not imported"
                ) from None
            if content.name.endswith(_INCOMPLETE) or not stat.S_ISREG(st.st_mode):
                raise _invalid(f"{rel} in {snapshot} is not a complete file; not imported")
            found.append((content, rel, MODE_EXEC if st.st_mode & 0o111 else MODE_FILE, st))
    if not found:
        raise ErrorCode.LOCAL_EMPTY.error(f"nothing to import: {snapshot} contains no files")
    return found


def _from_local_dir(root: Path, repo_id: str | None, revision: str | None) -> Found:
    """A ``local_dir=`` download or plain directory, without ``.cache/huggingface/``."""
    try:
        scanned, skipped = _scan(root)
    except WregError as exc:
        if exc.code is not ErrorCode.LOCAL_EMPTY:
            raise
        scanned, skipped = [], []
    inside = METADATA_DIR + "/"
    skipped = [rel for rel in skipped if not (rel + "/").startswith(inside)]
    if skipped:
        raise _invalid(
            f"{skipped[0]} in {root} is a symlink out of the directory or to nothing; "
            "not imported (`wreg push --follow-symlinks` pushes what links lead to)"
        )
    files = [f for f in scanned if not (f[1] + "/").startswith(inside)]
    if not files:
        raise ErrorCode.LOCAL_EMPTY.error(f"nothing to import: {root} contains no files")
    return Found(root, files, repo_id, _local_dir_commit(root), revision)


def _local_dir_commit(root: Path) -> str | None:
    """The commit every ``download/*.metadata`` file names first, if they agree."""
    download = root / METADATA_DIR / "download"
    commits: set[str] = set()
    for meta in sorted(download.rglob("*.metadata")) if download.is_dir() else []:
        try:
            with meta.open(encoding="utf-8") as f:
                commits.add(f.readline().strip())
        except (OSError, UnicodeDecodeError):
            return None
    if len(commits) != 1:
        return None
    commit = commits.pop()
    return commit if hf.is_commit_id(commit) else None


def _invalid(message: str) -> WregError:
    return ErrorCode.HF_SNAPSHOT_INVALID.error(message)
