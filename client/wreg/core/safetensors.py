"""The safetensors header, parsed strictly: every tensor's dtype, shape and byte range.

The one parser of the format's header: the loader (``wreg._load``) and the registry's
``inspect`` (``wreg.core.tensors``) both read headers here. The header comes from the
registry (verified against its chunk digests, but written by
whoever pushed the model), so nothing in it is trusted: its length is capped, every
tensor must name a known dtype, a shape of non-negative integers whose byte size is
exactly its ``data_offsets`` span, and a span inside the file; spans may not overlap.
Pure: bytes in, ``Header`` out.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Final

from wreg.core.errors import ErrorCode, WregError

# The format's own limit on the JSON header (safetensors refuses larger ones).
MAX_HEADER: Final = 100 << 20
PREFIX: Final = 8
# Bounds on what a header may declare before anything is allocated for it.
MAX_TENSORS: Final = 1 << 20
MAX_NAME: Final = 1024
MAX_DIMS: Final = 16

# safetensors dtype -> bytes per element.
ITEMSIZE: Final = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor of a safetensors file: ``begin``/``end`` are byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def row_bytes(self) -> int:
        """Bytes of one index along dim 0 (a 0-d tensor is one row)."""
        return ITEMSIZE[self.dtype] * math.prod(self.shape[1:])


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: the tensors in file order and the ``__metadata__`` strings."""

    length: int  # bytes of the prefix and the JSON: where the data section starts
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]


def invalid(path: str, why: str) -> WregError:
    return ErrorCode.TENSORS_INVALID.error(
        f"{path}: not a valid safetensors file: {why}", detail={"path": path}
    )


def header_length(prefix: bytes, file_size: int, path: str) -> int:
    """Bytes of prefix + JSON, from the file's first 8 bytes."""
    if file_size < PREFIX or len(prefix) < PREFIX:
        raise invalid(path, f"{file_size} bytes is too short for a header")
    n: int = struct.unpack_from("<Q", prefix)[0]
    if n > MAX_HEADER or PREFIX + n > file_size:
        raise invalid(path, f"header length {n} exceeds the file or {MAX_HEADER} bytes")
    return PREFIX + n


def parse(head: bytes, file_size: int, path: str) -> Header:
    """The header of a safetensors file of ``file_size`` bytes starting with ``head``
    (at least the prefix and the whole JSON)."""
    length = header_length(head, file_size, path)
    if len(head) < length:
        raise invalid(path, "header cut short")
    try:
        doc = json.loads(head[PREFIX:length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(path, f"header is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise invalid(path, "header is not a JSON object")
    if len(doc) > MAX_TENSORS + 1:
        raise invalid(path, f"more than {MAX_TENSORS} tensors")
    data_size = file_size - length
    metadata = _metadata(doc.pop("__metadata__", None), path)
    tensors = sorted(
        (_tensor(name, info, data_size, length, path) for name, info in doc.items()),
        key=lambda t: (t.begin, t.end),
    )
    for prev, cur in itertools.pairwise(tensors):
        if cur.begin < prev.end:
            raise invalid(path, f"tensors {prev.name!r} and {cur.name!r} overlap")
    return Header(length, tuple(tensors), metadata)


def _metadata(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid(path, "__metadata__ is not a map of strings")
    return dict(value)


def _tensor(name: str, info: Any, data_size: int, length: int, path: str) -> TensorInfo:
    if not name or len(name) > MAX_NAME:
        raise invalid(path, f"tensor name of {len(name)} characters")
    if not isinstance(info, dict):
        raise invalid(path, f"tensor {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        raise ErrorCode.TENSORS_UNSUPPORTED.error(
            f"{path}: tensor {name!r} has dtype {dtype!r}, which wreg cannot load "
            f"(supported: {', '.join(sorted(ITEMSIZE))})",
            detail={"path": path, "tensor": name, "dtype": dtype},
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise invalid(path, f"tensor {name!r} has shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise invalid(path, f"tensor {name!r} has data_offsets {offsets!r} outside the data")
    begin, end = offsets
    if math.prod(shape) * ITEMSIZE[dtype] != end - begin:
        raise invalid(path, f"tensor {name!r}: shape {shape} of {dtype} is not {end - begin} bytes")
    return TensorInfo(name, dtype, tuple(shape), length + begin, length + end)


def render(
    tensors: list[tuple[TensorInfo, tuple[int, ...], int]], metadata: dict[str, str]
) -> bytes:
    """The prefix and JSON header of a new file holding ``tensors`` (each: its info, its
    shape in the new file, its byte length) back to back in the given order; the JSON is
    padded with spaces to a multiple of 8 bytes, as safetensors writes it."""
    doc: dict[str, Any] = {}
    if metadata:
        doc["__metadata__"] = metadata
    at = 0
    for info, shape, nbytes in tensors:
        doc[info.name] = {
            "dtype": info.dtype,
            "shape": list(shape),
            "data_offsets": [at, at + nbytes],
        }
        at += nbytes
    body = json.dumps(doc, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body
