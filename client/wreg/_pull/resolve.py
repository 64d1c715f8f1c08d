"""Stage 1, resolve: the manifest a reference names, verified against its digest, and the
files of it a pull selects (and whether the disk has room for them).

The digest verified here travels with the manifest (``Resolved``) to every later stage
(the snapshot lock, the snapshot, the ref, the result): it is never recomputed from the
parsed manifest.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from wreg._cache_ops import resolve_offline
from wreg.core.digest import digest_bytes
from wreg.core.errors import ErrorCode
from wreg.core.manifest import FileEntry, Manifest
from wreg.core.reference import Reference

if TYPE_CHECKING:
    from wreg._cache import NodeCache
    from wreg._http import Registry


class Resolved(NamedTuple):
    """A manifest and the digest its bytes were verified against."""

    manifest: Manifest
    digest: str
    body: bytes | None  # the bytes as received; None when read from the node cache


async def resolve(registry: Registry, ref: Reference) -> Resolved:
    """The manifest ``ref`` names on the registry; its bytes must hash to the digest the
    reference (or else the registry's answer) claims."""
    body, claimed = await registry.get_manifest(ref)
    digest = digest_bytes(body)
    expected = ref.digest or claimed
    if expected is not None and digest != expected:
        raise ErrorCode.DIGEST_MISMATCH.error(
            f"manifest for {ref} does not match its digest: expected {expected}, got {digest}"
        )
    return Resolved(Manifest.from_json_bytes(body), digest, body)


async def resolve_for(registry: Registry | None, cache: NodeCache, ref: Reference) -> Resolved:
    """``resolve`` (and the manifest saved in the node cache), or offline
    (``registry=None``) ``resolve_cached``."""
    if registry is None:
        return resolve_cached(cache, ref)
    resolved = await resolve(registry, ref)
    assert resolved.body is not None  # noqa: S101 - narrows: received from the registry
    cache.save_manifest(resolved.digest, resolved.body)
    return resolved


def resolve_cached(cache: NodeCache, ref: Reference) -> Resolved:
    """The manifest ``ref`` names according to the node cache alone (offline): by digest,
    or by the tag's ref; ``NodeCache.load_manifest`` checks the bytes against the digest.
    What is missing is reported by ``resolve_offline``."""
    digest = ref.digest
    if digest is None:
        assert ref.tag is not None  # noqa: S101 - narrows: a reference has a digest or a tag
        digest = cache.read_ref(ref.name, ref.tag)
    manifest = cache.load_manifest(digest) if digest is not None else None
    if digest is None or manifest is None:
        resolve_offline(cache, ref)  # raises NOT_CACHED naming what is missing
        return resolve_cached(cache, ref)  # it appeared meanwhile (a concurrent pull)
    return Resolved(manifest, digest, None)


def select_files(
    manifest: Manifest, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[FileEntry]:
    """The files whose path matches an ``include`` pattern (all if none) and no
    ``exclude`` pattern; ``fnmatch`` rules, so ``*`` also matches ``/``."""
    chosen = [
        e
        for e in manifest.files
        if (not include or any(fnmatch.fnmatchcase(e.path, p) for p in include))
        and not any(fnmatch.fnmatchcase(e.path, p) for p in exclude)
    ]
    if not chosen and manifest.files:
        raise ErrorCode.FILTER_INVALID.error(
            f"no file of the model matches --include {list(include)} --exclude {list(exclude)}",
        )
    return chosen


def _filesystem(path: Path) -> tuple[int, Path]:
    """(device, nearest existing directory) of where ``path`` is or would be created."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev, path


def check_room(
    cache: NodeCache,
    ref: Reference,
    selected: Sequence[FileEntry],
    dest: Path | None,
    max_total: int | None,
) -> None:
    """Refuse, before writing anything, a pull that would write too much.

    What a pull writes is the sizes of its files, not of the chunks it downloads: a
    manifest may list one 4 MiB chunk a million times, so a tiny download can mean
    terabytes on disk. Counted: each file missing from the cache once (blobs are
    deduplicated), and with ``dest`` on another filesystem than the cache every selected
    file again (copied; on the same one they are hardlinked). With ``max_total`` the sum
    must not exceed it; without, each filesystem's share must fit in its free space.
    """
    cache_fs = _filesystem(cache.layout.blobs_dir)
    blobs = {e.digest: e.size for e in selected if not cache.has_blob(e)}
    writes = {cache_fs[0]: (cache_fs[1], sum(blobs.values()))}
    if dest is not None:
        dest_fs = _filesystem(dest)
        if dest_fs[0] != cache_fs[0]:
            writes[dest_fs[0]] = (dest_fs[1], sum(e.size for e in selected))
    needed = sum(n for _, n in writes.values())
    if max_total is not None:
        if needed > max_total:
            raise ErrorCode.PULL_TOO_LARGE.error(
                f"pulling {ref} would write {_gib(needed)}, more than --max-total "
                f"{_gib(max_total)}; raise --max-total or narrow it with --include/--exclude",
                detail={"needed": needed, "limit": max_total},
            )
        return
    for where, n in writes.values():
        free = shutil.disk_usage(where).free
        if n > free:
            raise ErrorCode.PULL_TOO_LARGE.error(
                f"pulling {ref} would write {_gib(n)} to {where}, which has {_gib(free)} free; "
                "free space, or pass --max-total to override",
                detail={"needed": n, "limit": free, "path": str(where)},
            )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB ({n} bytes)"
