"""``wreg pull REF --tensors PATTERN -o DIR``: safetensors files holding only the selected
tensors (or rows of them), each with a correct header, beside the model's other files.

The tensors' bytes are copied from the load's sources (kernel-side where the filesystem
can) into a staging file in the destination directory, renamed into place once whole:
``DIR`` never holds a partial file under a final name. Directories under ``DIR`` are
opened relative to their parent without following links, as ``materialize`` does.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from wreg._cache_ops import Dirs
from wreg._load import header as headers
from wreg._load.produce import Ready, Source
from wreg.core.errors import ErrorCode


def write_selected(items: Sequence[Ready], dest: Path, force: bool) -> list[str]:
    """Write one safetensors file per source file of ``items``, under its own path in
    ``dest``; returns the paths written. A file already there is refused unless
    ``force`` (``LOCAL_FILE_EXISTS``), before anything is written."""
    by_file: dict[int, tuple[Source, list[Ready]]] = {}
    for item in items:
        by_file.setdefault(id(item.source), (item.source, []))[1].append(item)
    dest.mkdir(parents=True, exist_ok=True)
    dirs = Dirs(dest)
    try:
        plans = []
        for source, ready in by_file.values():
            parts = tuple(source.entry.path.split("/"))
            parent = dirs.get(parts[:-1], create=True)
            assert parent is not None  # noqa: S101 - narrows: create=True opens or raises
            if not force:
                with contextlib.suppress(FileNotFoundError):
                    os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                    raise ErrorCode.LOCAL_FILE_EXISTS.error(
                        f"{dest / source.entry.path} exists; use --force to replace it"
                    )
            plans.append((source, sorted(ready, key=lambda r: r.want.begin), parent, parts[-1]))
        for source, ready, parent, name in plans:
            _write_file(source, ready, parent, name)
        return [source.entry.path for source, *_ in plans]
    finally:
        dirs.close()


def _write_file(source: Source, ready: list[Ready], parent: int, name: str) -> None:
    metadata = source.header.metadata if source.header is not None else {}
    head = headers.render([(r.want.info, r.want.shape, r.want.nbytes) for r in ready], metadata)
    staging = f".{name}.wreg-{uuid.uuid4().hex[:8]}"
    out = os.open(
        staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent
    )
    try:
        os.write(out, head)
        at = len(head)
        for r in ready:
            _copy_range(source.fd, r.want.begin, out, at, r.want.nbytes)
            at += r.want.nbytes
        os.fsync(out)
        os.rename(staging, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging, dir_fd=parent)
        raise
    finally:
        os.close(out)


def _copy_range(src: int, src_at: int, out: int, out_at: int, n: int) -> None:
    while n > 0:
        try:
            done = os.copy_file_range(src, out, n, src_at, out_at)
        except OSError:  # another filesystem, or no copy_file_range: copy by hand
            done = os.pwrite(out, os.pread(src, min(n, 8 << 20), src_at), out_at)
        if done <= 0:
            raise ErrorCode.TENSORS_INVALID.error(f"source ended {n} bytes early")
        src_at += done
        out_at += done
        n -= done
