"""What a model file holds, from its header bytes and its chunk list alone.

``inspect`` and ``diff`` describe a manifest's safetensors and GGUF files (tensor names,
dtypes, shapes, byte ranges, parameter counts, metadata) without anyone downloading
tensor bytes: the header is parsed by the format's one strict parser
(``wreg.core.safetensors``, ``wreg.core.gguf``) and each tensor's *content* is named by
its **tensor digest**, computed from the manifest's chunk list.

Tensor digest (defined here, once)
----------------------------------
Cut the tensor's byte range ``[begin, end)`` at the file's chunk boundaries into
*pieces*. Each piece is named by the blake3 digest of its own bytes and its length. The
tensor digest is blake3 in key-derivation mode (context :data:`TENSOR_DIGEST_CONTEXT`)
over, for each piece in order, its 32 digest bytes then its length as 8 bytes
little-endian — the construction of ``wreg.core.digest.file_identity``, under its own
context, so a tensor digest never equals a file identity.

A piece that is a whole chunk is named by that chunk's digest, which the manifest
already holds: safetensors files are chunked tensor-aligned (``wreg.core.chunking``: the
header its own chunk, every tensor of at least ``CHUNK_PACK`` bytes cut from its own
start), so the digest of every such tensor needs no byte at all. Only a tensor sharing a
chunk with others (runs of tensors under ``CHUNK_PACK`` = 64 KiB, packed together) has a
piece that is part of a chunk; the registry reads that packed chunk (small and bounded)
and hashes the piece's bytes. The digest therefore names the tensor's bytes exactly,
wherever in the pack or file they sit: equal digests mean equal bytes (blake3 collision
resistance), for any chunking. Different chunkings of equal bytes can give different
digests — a false "changed", never a false "unchanged" — and wreg's chunker cuts an
unchanged tensor the same way in every version.

Pure: bytes and chunk lists in, values out; no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import blake3

from wreg.core import gguf, safetensors
from wreg.core.digest import PREFIX, is_digest
from wreg.core.errors import ErrorCode, WregError
from wreg.core.gguf import NeedMoreBytes

__all__ = [
    "MAX_DESCRIBED_HEADER",
    "TENSOR_DIGEST_CONTEXT",
    "FileDescription",
    "Format",
    "Layout",
    "ManifestDescription",
    "NeedMoreBytes",
    "Piece",
    "Tensor",
    "TensorEntry",
    "format_of",
    "parse_layout",
    "tensor_digest",
    "tensor_pieces",
    "unverifiable",
]

Format = Literal["safetensors", "gguf"]
FORMATS: Final[dict[str, Format]] = {".safetensors": "safetensors", ".gguf": "gguf"}

TENSOR_DIGEST_CONTEXT: Final = "wreg 2026-12 tensor digest v1"

MAX_DESCRIBED_HEADER: Final = 32 << 20
"""The largest header ``inspect`` reads (real headers: kilobytes for safetensors, a few
MiB for a GGUF vocabulary); a larger one is that file's error, not a bigger read."""

# Bounds on a description read from a peer (the registry's answer), checked before use.
MAX_FILES: Final = 100_000
MAX_TENSORS: Final = safetensors.MAX_TENSORS
MAX_DIMS: Final = 16


@dataclass(frozen=True, slots=True)
class Tensor:
    """One tensor of a file: ``begin``/``end`` are absolute byte offsets in the file.

    ``dtype`` is the format's own name (safetensors ``BF16``; GGUF ``Q4_K``), ``shape`` the
    format's own order (GGUF: innermost first, as ``gguf.GGUFReader`` reports it).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class Layout:
    """A parsed header: tensor data starts at ``header_len``; tensors in file order."""

    format: Format
    header_len: int
    tensors: tuple[Tensor, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)


def format_of(path: str) -> Format | None:
    """The tensor format a manifest path names by its suffix, if any."""
    for suffix, fmt in FORMATS.items():
        if path.lower().endswith(suffix):
            return fmt
    return None


def parse_layout(fmt: Format, head: bytes, file_size: int, path: str = "") -> Layout:
    """The layout of a ``fmt`` file of ``file_size`` bytes whose first bytes are ``head``.

    Raises :class:`NeedMoreBytes` (``needed``: at least that many bytes) while ``head``
    ends inside the header, ``WregError`` (``TENSORS_INVALID``/``TENSORS_UNSUPPORTED``,
    one line) for a header that is not valid, and for one past
    :data:`MAX_DESCRIBED_HEADER` bytes.
    """
    if fmt == "safetensors":
        if len(head) < safetensors.PREFIX and file_size >= safetensors.PREFIX:
            raise NeedMoreBytes(safetensors.PREFIX)
        length = safetensors.header_length(head, file_size, path)
        _check_header_cap(length, path)
        if len(head) < length:
            raise NeedMoreBytes(length)
        header = safetensors.parse(head, file_size, path)
        tensors = tuple(Tensor(t.name, t.dtype, t.shape, t.begin, t.end) for t in header.tensors)
        return Layout("safetensors", header.length, tensors, dict(header.metadata))
    try:
        parsed = gguf.parse_gguf(head, file_size)
    except NeedMoreBytes as more:
        _check_header_cap(more.needed, path)
        raise
    if len(parsed.tensors) > MAX_TENSORS:
        raise ErrorCode.TENSORS_INVALID.error(
            f"{path}: more than {MAX_TENSORS} tensors", detail={"path": path}
        )
    tensors = tuple(
        sorted(
            (Tensor(t.name, t.type, t.shape, t.begin, t.end) for t in parsed.tensors),
            key=lambda t: (t.begin, t.end),
        )
    )
    return Layout("gguf", parsed.header_len, tensors, _json_safe(parsed.metadata))


def _check_header_cap(length: int, path: str) -> None:
    if length > MAX_DESCRIBED_HEADER:
        raise ErrorCode.TENSORS_INVALID.error(
            f"{path}: header of {length} bytes is larger than inspect reads "
            f"({MAX_DESCRIBED_HEADER} bytes)",
            detail={"path": path},
        )


def _json_safe(value: Any) -> Any:
    """GGUF metadata as strict JSON: a non-finite float becomes its string."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Piece:
    """The part of chunk ``index`` (at file offset ``at``, ``size`` bytes, ``digest``)
    that a tensor covers: bytes ``[start, start + length)`` of the chunk."""

    index: int
    at: int
    digest: str
    size: int
    start: int
    length: int

    @property
    def whole(self) -> bool:
        """Whether the piece is the whole chunk (then its digest is the chunk's)."""
        return self.start == 0 and self.length == self.size


def tensor_pieces(
    chunk_starts: Sequence[int], chunks: Sequence[tuple[str, int]], begin: int, end: int
) -> list[Piece]:
    """The pieces of bytes ``[begin, end)`` of a file whose chunks (``(digest, size)``, in
    order) start at ``chunk_starts`` (ascending file offsets, one per chunk)."""
    pieces: list[Piece] = []
    if end <= begin:
        return pieces
    index = max(bisect.bisect_right(chunk_starts, begin) - 1, 0)
    while index < len(chunks) and chunk_starts[index] < end:
        at = chunk_starts[index]
        digest, size = chunks[index]
        lo, hi = max(begin, at), min(end, at + size)
        if hi > lo:
            pieces.append(Piece(index, at, digest, size, lo - at, hi - lo))
        index += 1
    return pieces


def tensor_digest(pieces: Iterable[tuple[str, int]]) -> str:
    """The tensor digest of a tensor cut into ``pieces``: each ``(digest of the piece's
    bytes, its length)`` in order (module docstring)."""
    skip = len(PREFIX)
    packed = b"".join(bytes.fromhex(d[skip:]) + n.to_bytes(8, "little") for d, n in pieces)
    return PREFIX + blake3.blake3(packed, derive_key_context=TENSOR_DIGEST_CONTEXT).hexdigest()


def unverifiable(file: FileDescription, chunks: Sequence[tuple[str, int]]) -> list[str]:
    """The tensors of ``file`` whose description the chunk list (``(digest, size)`` in
    order, from a verified manifest) contradicts: a range past the file, or a tensor made
    of whole chunks whose digest is not the one those chunks give. What a client checks
    of a registry's description without a byte of the file (packed tensors' digests it
    must take on trust)."""
    starts, at = [], 0
    for _, size in chunks:
        starts.append(at)
        at += size
    wrong = []
    for t in file.tensors:
        if t.offset + t.nbytes > file.size:
            wrong.append(t.name)
            continue
        pieces = tensor_pieces(starts, chunks, t.offset, t.offset + t.nbytes)
        whole = all(p.whole for p in pieces)
        if whole and t.digest != tensor_digest((p.digest, p.length) for p in pieces):
            wrong.append(t.name)
    return wrong


# The JSON a description travels as (``GET /v1/repositories/{name}/inspect/{reference}``).


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor as described: ``offset`` is its absolute byte offset in the file;
    ``digest`` its tensor digest, or None where the registry could not compute it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    parameters: int
    digest: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "nbytes": self.nbytes,
            "parameters": self.parameters,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, doc: Any) -> TensorEntry:
        if not isinstance(doc, dict):
            raise _bad("a tensor is not an object")
        shape = doc.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(_count(d) for d in shape)
        ):
            raise _bad(f"tensor {doc.get('name')!r} has shape {shape!r}")
        digest = doc.get("digest")
        if digest is not None and not (isinstance(digest, str) and is_digest(digest)):
            raise _bad(f"tensor {doc.get('name')!r} has digest {digest!r}")
        return cls(
            _str(doc, "name"),
            _str(doc, "dtype"),
            tuple(shape),
            _int(doc, "offset"),
            _int(doc, "nbytes"),
            _int(doc, "parameters"),
            digest,
        )


@dataclass(frozen=True, slots=True)
class FileDescription:
    """One manifest file as described. ``format`` is None for files that are neither
    safetensors nor GGUF (no tensors); ``error`` says why a tensor file's header could not
    be described (then it has no tensors)."""

    path: str
    size: int
    digest: str
    format: Format | None
    metadata: dict[str, Any]
    parameters: int
    tensors: tuple[TensorEntry, ...]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "digest": self.digest,
            "format": self.format,
            "metadata": self.metadata,
            "parameters": self.parameters,
            "tensors": [t.to_json() for t in self.tensors],
        }
        if self.error is not None:
            doc["error"] = self.error
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> FileDescription:
        if not isinstance(doc, dict):
            raise _bad("a file is not an object")
        fmt = doc.get("format")
        if fmt is not None and fmt not in FORMATS.values():
            raise _bad(f"file {doc.get('path')!r} has format {fmt!r}")
        tensors = doc.get("tensors")
        if not isinstance(tensors, list) or len(tensors) > MAX_TENSORS:
            raise _bad(f"file {doc.get('path')!r} has no list of at most {MAX_TENSORS} tensors")
        metadata = doc.get("metadata")
        if not isinstance(metadata, dict):
            raise _bad(f"file {doc.get('path')!r} has metadata that is not an object")
        error = doc.get("error")
        if error is not None and not isinstance(error, str):
            raise _bad(f"file {doc.get('path')!r} has error {error!r}")
        digest = _str(doc, "digest")
        if not is_digest(digest):
            raise _bad(f"file {doc.get('path')!r} has digest {digest!r}")
        return cls(
            _str(doc, "path"),
            _int(doc, "size"),
            digest,
            fmt,
            metadata,
            _int(doc, "parameters"),
            tuple(TensorEntry.from_json(t) for t in tensors),
            error,
        )


@dataclass(frozen=True, slots=True)
class ManifestDescription:
    """A manifest as ``inspect`` describes it (the route's JSON, parsed strictly)."""

    name: str
    digest: str
    created_at: str | None
    pushed_by: str | None
    metadata: dict[str, Any]
    files: tuple[FileDescription, ...]

    @property
    def totals(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "bytes": sum(f.size for f in self.files),
            "tensors": sum(len(f.tensors) for f in self.files),
            "parameters": sum(f.parameters for f in self.files),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "created_at": self.created_at,
            "pushed_by": self.pushed_by,
            "metadata": self.metadata,
            "files": [f.to_json() for f in self.files],
            "totals": self.totals,
        }

    @classmethod
    def from_json(cls, doc: Any) -> ManifestDescription:
        if not isinstance(doc, dict):
            raise _bad("the description is not an object")
        files = doc.get("files")
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise _bad(f"the description has no list of at most {MAX_FILES} files")
        metadata = doc.get("metadata")
        if not isinstance(metadata, dict):
            raise _bad("the description's metadata is not an object")
        digest = _str(doc, "digest")
        if not is_digest(digest):
            raise _bad(f"the description names digest {digest!r}")
        return cls(
            _str(doc, "name"),
            digest,
            _opt_str(doc, "created_at"),
            _opt_str(doc, "pushed_by"),
            metadata,
            tuple(FileDescription.from_json(f) for f in files),
        )

    def file(self, path: str) -> FileDescription | None:
        return next((f for f in self.files if f.path == path), None)


def _bad(why: str) -> WregError:
    return ErrorCode.BODY_INVALID.error(f"the registry's description is malformed: {why}")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or not _count(value):
        raise _bad(f"{key} is {value!r}, not a non-negative integer")
    return value


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise _bad(f"{key} is {value!r}, not a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{key} is {value!r}, not a string")
    return value
