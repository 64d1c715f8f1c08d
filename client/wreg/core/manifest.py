"""Manifests: one immutable version of a model, in canonical JSON.

Canonical form: ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8. The manifest digest is the blake3 of exactly
those bytes, so two pushes of the same tree give the same digest.

Shape::

    {"files": [{"chunks": [{"digest": "blake3:…", "size": 4194304}, …],
                "digest": "blake3:…", "mode": 420, "path": "model.safetensors",
                "size": 90868376}, …],
     "metadata": {…},
     "schema": 2}

A file's ``digest`` is its *identity*: in schema 2 (what this client writes) the digest
of its ordered chunk list (``wreg.core.digest.file_identity``), checked on every parse,
so a file built from verified chunks is correct by construction and is never read back.
Schema 1 manifests (``digest``: blake3 of the whole content) are still read; their files
are verified by reading them once.

Parsing is strict so that one content has one digest: every field has its exact JSON
type (``420.0`` is not a mode, ``true`` is not a size), files are sorted by path, and the
server additionally insists the body is byte-for-byte the canonical serialisation. Every
check is linear in the bytes received: paths are capped in length, depth
(``MAX_PATH_DEPTH``) and total bytes (``MAX_MANIFEST_PATH_BYTES``), nesting in
``MAX_JSON_DEPTH``, and the tree check walks each path's segments once.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from wreg.core.digest import digest_bytes, file_identity, is_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.sizes import (
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_FILES,
    MAX_MANIFEST_PATH_BYTES,
    MAX_PATH_DEPTH,
    MAX_PATH_LENGTH,
)

SCHEMA_VERSION: Final = 2
"""The schema this client writes; ``SCHEMAS`` are the ones it reads."""
SCHEMAS: Final = frozenset({1, 2})
MODE_FILE: Final = 0o644
MODE_EXEC: Final = 0o755
# Names Windows reserves; a model tree containing them cannot be materialised there.
_DEVICE_NAMES: Final = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
# Characters a path may not hold, by Unicode category: controls (Cc), format characters
# (Cf: bidi overrides and isolates, zero-width spaces and joiners, BOM, soft hyphen, tags),
# line and paragraph separators (Zl, Zp), private use (Co) and unassigned (Cn). A name
# that renders differently from what it is cannot be reviewed.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn"})
# Printable characters that look like ".", "/", "\\" or ":", so "\u2024\u2024/x" reads as
# "../x" and "a\u2215b" as a directory that is not there.
_LOOKALIKES: Final = frozenset(
    "\u2024\u2025\u2026\ufe52\uff0e\u3002\uff61\u0701\u0702\ua4f8\u2e33"  # dots
    "\u2215\u2044\uff0f\u29f8\u2571\u1735\u2cc6\u2f03"  # slashes
    "\u29f5\u29f9\u2216\ufe68\uff3c\u2572"  # backslashes
    "\uff1a\ufe55\ufe13\u2236\ua789\u02d0\u0589\u05c3"  # colons
)
_ASCII_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(
    message: str, code: ErrorCode = ErrorCode.MANIFEST_INVALID, detail: Any = None
) -> WregError:
    return code.error(message, detail=detail)


def validate_path(path: str) -> str:
    """Accept only relative POSIX paths that stay inside the model directory."""
    unsafe = _invalid(f"unsafe path {path!r}", code=ErrorCode.PATH_UNSAFE, detail={"path": path})
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise unsafe
    if path.count("/") >= MAX_PATH_DEPTH:
        raise _invalid(
            f"path {path[:64]!r}… is deeper than {MAX_PATH_DEPTH} segments",
            code=ErrorCode.PATH_UNSAFE,
            detail={"path": path, "max_depth": MAX_PATH_DEPTH},
        )
    if path.startswith("/") or "\\" in path or ":" in path.split("/", 1)[0]:
        raise unsafe
    if path.isascii():
        if _ASCII_CONTROL.search(path):
            raise unsafe
    elif unicodedata.normalize("NFC", path) != path or any(
        c in _LOOKALIKES or unicodedata.category(c) in _UNSAFE_CATEGORIES for c in set(path)
    ):
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
    """One file of a model: path, size, identity digest, mode and ordered chunks."""

    path: str
    size: int
    digest: str
    mode: int
    chunks: tuple[ChunkRef, ...]

    @classmethod
    def of(cls, path: str, chunks: Iterable[ChunkRef], mode: int = MODE_FILE) -> FileEntry:
        """A schema-2 entry: size and digest follow from the chunks."""
        refs = tuple(chunks)
        return cls(path, sum(c.size for c in refs), identity_of(refs), mode, refs)

    @property
    def built_from_chunks(self) -> bool:
        """Whether the digest is the chunk list's identity (schema 2): then a file whose
        chunks each match their digests is this file, with nothing read back."""
        return self.digest == identity_of(self.chunks)

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


def identity_of(chunks: Iterable[ChunkRef]) -> str:
    """``file_identity`` of a chunk list."""
    return file_identity((c.digest, c.size) for c in chunks)


@dataclass(frozen=True, slots=True)
class Manifest:
    """An immutable model version. Build with ``Manifest.build`` to get validation."""

    files: tuple[FileEntry, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @classmethod
    def build(
        cls,
        files: Iterable[FileEntry],
        metadata: Mapping[str, Any] | None = None,
        schema: int = SCHEMA_VERSION,
    ) -> Manifest:
        """Sort files by path and validate the result (schema 2: every file digest must
        be its chunk list's identity, as ``FileEntry.of`` makes it)."""
        ordered = tuple(sorted(files, key=lambda f: f.path))
        return cls.from_json_bytes(cls(ordered, dict(metadata or {}), schema).to_json_bytes())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
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
        except RecursionError:
            raise _too_deep() from None
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """Validate a parsed document (which must have a canonical form)."""
        _check_depth(doc)
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
        schema = doc.get("schema")
        if type(schema) is not int or schema not in SCHEMAS:
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
        _check_order(files)
        _check_tree(files)
        if schema >= 2:
            for f in files:
                if not f.built_from_chunks:
                    raise _invalid(
                        f"{f.path}: digest {f.digest} is not the identity of its chunk list"
                        " (schema 2)"
                    )
        return cls(files, metadata, schema)


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _nonneg_int(value: Any) -> bool:
    return type(value) is int and value >= 0


def _too_deep() -> WregError:
    return _invalid(
        f"manifest nests arrays and objects deeper than {MAX_JSON_DEPTH}",
        detail={"max_depth": MAX_JSON_DEPTH},
    )


def _check_depth(doc: Any) -> None:
    """Refuse nesting past ``MAX_JSON_DEPTH``, iteratively (one visit per value)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        stack.extend((child, depth + 1) for child in children)


def _parse_file(doc: Any) -> FileEntry:
    if not isinstance(doc, dict) or set(doc) != {"path", "size", "digest", "mode", "chunks"}:
        raise _invalid("each file needs exactly: path, size, digest, mode, chunks")
    path = validate_path(doc["path"])
    size, digest, mode, raw_chunks = doc["size"], doc["digest"], doc["mode"], doc["chunks"]
    if not _nonneg_int(size):
        raise _invalid(f"{path}: size must be a non-negative integer")
    if not isinstance(digest, str) or not is_digest(digest):
        raise _invalid(f"{path}: invalid file digest {digest!r}", code=ErrorCode.DIGEST_INVALID)
    if type(mode) is not int or mode not in (MODE_FILE, MODE_EXEC):
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


def _check_order(files: tuple[FileEntry, ...]) -> None:
    """Files strictly increasing by path (code point order, what ``build`` sorts by), and
    no more than ``MAX_MANIFEST_PATH_BYTES`` of paths in all."""
    total = 0
    previous: str | None = None
    for f in files:
        total += len(f.path.encode("utf-8", "surrogatepass"))
        if total > MAX_MANIFEST_PATH_BYTES:
            raise _invalid(
                f"manifest paths exceed {MAX_MANIFEST_PATH_BYTES} path bytes in all",
                detail={"max_path_bytes": MAX_MANIFEST_PATH_BYTES},
            )
        if previous is not None and f.path <= previous:
            if f.path == previous:
                raise _invalid(
                    f"duplicate path {f.path!r}",
                    code=ErrorCode.PATH_UNSAFE,
                    detail={"path": f.path},
                )
            raise _invalid(
                f"files are not sorted by path: {f.path!r} follows {previous!r}",
                detail={"path": f.path, "previous": previous},
            )
        previous = f.path


def _check_tree(files: tuple[FileEntry, ...]) -> None:
    """No duplicate paths (case-insensitively) and no file that is also a directory.

    The tree is a map from (parent node, lower-cased segment) to node, so each path costs
    one lookup per segment: linear in path bytes, where collecting every directory prefix
    as a string would cost depth times length per path.
    """
    nodes: dict[tuple[int, str], int] = {}
    file_nodes: set[int] = set()
    for f in files:
        *dirs, name = f.path.lower().split("/")
        parent = 0
        for segment in dirs:
            node = nodes.setdefault((parent, segment), len(nodes) + 1)
            if node in file_nodes:
                _clash(f.path)
            parent = node
        node = nodes.get((parent, name), 0)
        if node in file_nodes:
            raise _invalid(
                f"duplicate path {f.path!r}", code=ErrorCode.PATH_UNSAFE, detail={"path": f.path}
            )
        if node:
            _clash(f.path)
        node = len(nodes) + 1
        nodes[(parent, name)] = node
        file_nodes.add(node)


def _clash(path: str) -> None:
    raise _invalid(
        f"path {path!r} is a file inside another file, or a file that is also a directory",
        code=ErrorCode.PATH_UNSAFE,
        detail={"path": path},
    )
