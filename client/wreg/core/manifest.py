"""Manifests: one immutable version of a model, in canonical JSON.

Canonical form: ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8. The manifest digest is the blake3 of exactly
those bytes, so two pushes of the same tree give the same digest.

Shape::

    {"files": [{"chunks": [{"digest": "blake3:…", "size": 4194304}, …],
                "digest": "blake3:…", "mode": 420, "path": "model.safetensors",
                "size": 90868376}, …],
     "metadata": {…},
     "schema": 1}
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from wreg.core.digest import digest_bytes, is_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.sizes import MAX_MANIFEST_BYTES, MAX_MANIFEST_FILES, MAX_PATH_LENGTH

SCHEMA_VERSION: Final = 1
MODE_FILE: Final = 0o644
MODE_EXEC: Final = 0o755
# Names Windows reserves; a model tree containing them cannot be materialised there.
_DEVICE_NAMES: Final = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)


def _invalid(
    message: str, code: ErrorCode = ErrorCode.MANIFEST_INVALID, detail: Any = None
) -> WregError:
    return code.error(message, detail=detail)


def validate_path(path: str) -> str:
    """Accept only relative POSIX paths that stay inside the model directory."""
    unsafe = _invalid(f"unsafe path {path!r}", code=ErrorCode.PATH_UNSAFE, detail={"path": path})
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise unsafe
    if path.startswith("/") or "\\" in path or "\x00" in path or ":" in path.split("/")[0]:
        raise unsafe
    if any(ord(c) < 0x20 for c in path) or unicodedata.normalize("NFC", path) != path:
        raise unsafe
    for segment in path.split("/"):
        if segment in {"", ".", ".."}:
            raise unsafe
        if segment.split(".")[0].lower() in _DEVICE_NAMES or segment.endswith((" ", ".")):
            raise unsafe
    return path


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file, in file order: its digest and raw size."""

    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a model: path, size, whole-file digest, mode and ordered chunks."""

    path: str
    size: int
    digest: str
    mode: int
    chunks: tuple[ChunkRef, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "digest": self.digest,
            "mode": self.mode,
            "chunks": [c.to_json() for c in self.chunks],
        }

    def chunk_offsets(self) -> Iterable[tuple[int, ChunkRef]]:
        """(offset in file, chunk) pairs."""
        offset = 0
        for chunk in self.chunks:
            yield offset, chunk
            offset += chunk.size


@dataclass(frozen=True, slots=True)
class Manifest:
    """An immutable model version. Build with ``Manifest.build`` to get validation."""

    files: tuple[FileEntry, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, files: Iterable[FileEntry], metadata: Mapping[str, Any] | None = None
    ) -> Manifest:
        """Sort files by path and validate the result."""
        manifest = cls(tuple(sorted(files, key=lambda f: f.path)), dict(metadata or {}))
        return cls.from_json_bytes(manifest.to_json_bytes())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "files": [f.to_json() for f in self.files],
            "metadata": dict(self.metadata),
        }

    def to_json_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        return digest_bytes(self.to_json_bytes())

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def chunk_digests(self) -> set[str]:
        return {c.digest for f in self.files for c in f.chunks}

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate; raises ``InvalidInput`` naming the first problem found."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise _invalid("manifest too large", code=ErrorCode.MANIFEST_TOO_LARGE)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(f"manifest is not valid JSON: {exc}") from None
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """Validate a parsed document (which must have a canonical form)."""
        try:
            canonical_json(doc)
        except (ValueError, UnicodeEncodeError):
            # NaN/Infinity/1e999 or lone surrogates: JSON parses them, canonical form cannot.
            raise _invalid("manifest contains non-finite numbers or invalid strings") from None
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict):
            raise _invalid("manifest must be a JSON object")
        if doc.get("schema") != SCHEMA_VERSION:
            raise _invalid(f"unsupported manifest schema {doc.get('schema')!r}")
        unknown = set(doc) - {"schema", "files", "metadata"}
        if unknown:
            raise _invalid(f"unknown manifest fields {sorted(unknown)}")
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict):
            raise _invalid("manifest metadata must be an object")
        raw_files = doc.get("files")
        if not isinstance(raw_files, list):
            raise _invalid("manifest files must be a list")
        if len(raw_files) > MAX_MANIFEST_FILES:
            raise _invalid(f"manifest has more than {MAX_MANIFEST_FILES} files")
        files = tuple(_parse_file(f) for f in raw_files)
        _check_tree(files)
        return cls(files, metadata)


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_file(doc: Any) -> FileEntry:
    if not isinstance(doc, dict) or set(doc) != {"path", "size", "digest", "mode", "chunks"}:
        raise _invalid("each file needs exactly: path, size, digest, mode, chunks")
    path = validate_path(doc["path"])
    size, digest, mode, raw_chunks = doc["size"], doc["digest"], doc["mode"], doc["chunks"]
    if not _nonneg_int(size):
        raise _invalid(f"{path}: size must be a non-negative integer")
    if not isinstance(digest, str) or not is_digest(digest):
        raise _invalid(f"{path}: invalid file digest {digest!r}", code=ErrorCode.DIGEST_INVALID)
    if mode not in (MODE_FILE, MODE_EXEC):
        raise _invalid(f"{path}: mode must be 0o644 or 0o755")
    if not isinstance(raw_chunks, list):
        raise _invalid(f"{path}: chunks must be a list")
    chunks = []
    for c in raw_chunks:
        if not isinstance(c, dict) or set(c) != {"digest", "size"}:
            raise _invalid(f"{path}: each chunk needs exactly digest and size")
        if not isinstance(c["digest"], str) or not is_digest(c["digest"]):
            raise _invalid(
                f"{path}: invalid chunk digest {c['digest']!r}", code=ErrorCode.DIGEST_INVALID
            )
        if not _nonneg_int(c["size"]) or c["size"] == 0:
            raise _invalid(f"{path}: chunk size must be a positive integer")
        chunks.append(ChunkRef(c["digest"], c["size"]))
    if sum(c.size for c in chunks) != size:
        raise _invalid(f"{path}: chunk sizes do not add up to the file size")
    return FileEntry(path, size, digest, mode, tuple(chunks))


def _check_tree(files: tuple[FileEntry, ...]) -> None:
    """No duplicate paths (case-insensitively) and no file that is also a directory."""
    seen: set[str] = set()
    dirs: set[str] = set()
    for f in files:
        key = f.path.lower()
        if key in seen:
            raise _invalid(
                f"duplicate path {f.path!r}", code=ErrorCode.PATH_UNSAFE, detail={"path": f.path}
            )
        seen.add(key)
        parts = key.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = seen & dirs
    if clash:
        path = sorted(clash)[0]
        raise _invalid(
            f"path {path!r} is both a file and a directory",
            code=ErrorCode.PATH_UNSAFE,
            detail={"path": path},
        )
