"""What changed from one model version to another, from manifests and descriptions only.

``diff(a, b)`` compares two described manifests (:class:`Described`: a manifest, its
verified digest and the registry's description of its files, ``wreg.core.tensors``):

- **files**, by path: added, removed, changed (another file identity digest) or
  unchanged (the same: then every byte is the same, by construction of the identity);
- **tensors** of each changed file present in both, by name: added, removed, changed
  (dtype, shape or tensor digest differ; a tensor without a digest on either side counts
  as changed, so "unchanged" is never a guess) and the count unchanged;
- **bytes**: ``bytes_total`` (raw bytes of B's files), ``bytes_shared`` (raw bytes of
  B's distinct chunks that A also has, by chunk digest) and ``bytes_new`` (of B's
  distinct chunks that A lacks): the upload a push of B after A needs, had the registry
  nothing but A.

Pure: values in, a JSON-able dict out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wreg.core.manifest import Manifest
from wreg.core.tensors import FileDescription, ManifestDescription, TensorEntry

__all__ = ["Described", "diff", "tensor_changes"]


@dataclass(frozen=True, slots=True)
class Described:
    """A manifest with its reference, verified digest and description."""

    reference: str
    digest: str
    manifest: Manifest
    description: ManifestDescription


def tensor_changes(a: TensorEntry, b: TensorEntry) -> list[str]:
    """What differs between two tensors of one name: ``dtype``, ``shape``, ``content``."""
    changes = []
    if a.dtype != b.dtype:
        changes.append("dtype")
    if a.shape != b.shape:
        changes.append("shape")
    if a.digest is None or b.digest is None or a.digest != b.digest:
        changes.append("content")
    return changes


def _tensors(a: FileDescription | None, b: FileDescription | None) -> dict[str, Any]:
    old = {t.name: t for t in a.tensors} if a is not None else {}
    new = {t.name: t for t in b.tensors} if b is not None else {}
    changed = []
    unchanged = 0
    for name in sorted(old.keys() & new.keys()):
        what = tensor_changes(old[name], new[name])
        if what:
            ta, tb = old[name], new[name]
            changed.append(
                {
                    "name": name,
                    "changes": what,
                    "dtype": [ta.dtype, tb.dtype],
                    "shape": [list(ta.shape), list(tb.shape)],
                    "nbytes": [ta.nbytes, tb.nbytes],
                }
            )
        else:
            unchanged += 1
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": changed,
        "unchanged": unchanged,
    }


def diff(a: Described, b: Described) -> dict[str, Any]:
    """The difference from ``a`` to ``b`` (module docstring), as JSON-able values::

    {"a": {"reference", "digest"}, "b": {...},
     "files": {"added": [path], "removed": [path], "unchanged": [path],
               "changed": [{"path", "size": [a, b], "digest": [a, b],
                            "tensors": {"added", "removed", "changed", "unchanged"}}]},
     "tensors": {"added", "removed", "changed", "unchanged"},   (counts)
     "bytes_total", "bytes_shared", "bytes_new"}
    """
    files_a = {f.path: f for f in a.manifest.files}
    files_b = {f.path: f for f in b.manifest.files}
    added = sorted(files_b.keys() - files_a.keys())
    removed = sorted(files_a.keys() - files_b.keys())
    both = sorted(files_a.keys() & files_b.keys())
    unchanged = [p for p in both if files_a[p].digest == files_b[p].digest]
    changed = []
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    for path in both:
        fa, fb = files_a[path], files_b[path]
        if fa.digest == fb.digest:
            desc = b.description.file(path)
            counts["unchanged"] += len(desc.tensors) if desc is not None else 0
            continue
        tensors = _tensors(a.description.file(path), b.description.file(path))
        changed.append(
            {
                "path": path,
                "size": [fa.size, fb.size],
                "digest": [fa.digest, fb.digest],
                "tensors": tensors,
            }
        )
        for key in ("added", "removed", "changed"):
            counts[key] += len(tensors[key])
        counts["unchanged"] += tensors["unchanged"]
    for path in added:
        desc = b.description.file(path)
        counts["added"] += len(desc.tensors) if desc is not None else 0
    for path in removed:
        desc = a.description.file(path)
        counts["removed"] += len(desc.tensors) if desc is not None else 0

    chunks_a = a.manifest.chunk_digests()
    sizes_b = {c.digest: c.size for f in b.manifest.files for c in f.chunks}
    shared = sum(size for digest, size in sizes_b.items() if digest in chunks_a)
    return {
        "a": {"reference": a.reference, "digest": a.digest},
        "b": {"reference": b.reference, "digest": b.digest},
        "files": {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged},
        "tensors": counts,
        "bytes_total": b.manifest.total_size,
        "bytes_shared": shared,
        "bytes_new": sum(sizes_b.values()) - shared,
    }
