"""The Hugging Face compatible API: existing HF clients use wreg unchanged.

``HF_ENDPOINT=<wreg url>`` and ``HF_TOKEN=<wreg token>`` make ``huggingface_hub`` (and so
transformers, sentence-transformers, diffusers, vLLM) download from wreg, outside
``/v1``, over the same domain layer, auth and chunk store:

    (``wreg.core.hf``: repository ids, revisions, commit ids — pure, shared)
    errors.py     X-Error-Code errors; ``HfRoute`` translates every other error
    snapshots.py  (repository id, revision) → manifest
    routes.py     the read API: model info, tree, paths-info, resolve (bytes, ranges)
    mirror.py     pull-through from an upstream hub (WREG_UPSTREAM_HF)
    uploads.py    the write API: create_repo, preupload, commit (upload_folder)

``install(app)`` registers the id convertor and the routes, after every ``/v1`` route.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor

HF_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?"
_HF_ID_RE = re.compile(HF_ID_PATTERN)


class RepoIdConvertor(Convertor[str]):
    """``{repo_id:hfid}``: an HF repository id, one or two segments."""

    regex = HF_ID_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        if not _HF_ID_RE.fullmatch(value):
            raise ValueError(f"not a repository id: {value!r}")
        return value


register_url_convertor("hfid", RepoIdConvertor())


def install(app: FastAPI) -> None:
    """Add the HF routes to ``app`` (call after the ``/v1`` routers)."""
    from wreg_server.hf import routes, uploads

    app.include_router(uploads.router)
    app.include_router(routes.router)


SPOOL_PREFIXES = ("mirror-", "hf-commit-", "hf-lfs-")
STALE_SPOOL_SECONDS = 24 * 3600


def sweep_spool(spool: Path, now: float | None = None) -> int:
    """Remove what the HF API spooled under ``spool`` (``<data>/tmp``) and a crash left
    behind: directories it names as its own whose entries have not changed for
    ``STALE_SPOOL_SECONDS`` (a live fetch adds a file per file it spools, a live commit
    is far younger, so another process sharing the data directory keeps its own).
    Returns how many were removed; at start-up."""
    if not spool.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - STALE_SPOOL_SECONDS
    removed = 0
    for entry in spool.iterdir():
        ours = entry.name.startswith(SPOOL_PREFIXES) and not entry.is_symlink()
        if ours and entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


async def close(app: FastAPI) -> None:
    """Release what the HF API opened (the mirror's upstream connections); at shutdown."""
    from wreg_server.hf.mirror import Mirror

    mirror = getattr(app.state, "hf_mirror", None)
    if isinstance(mirror, Mirror):
        await mirror.close()
