"""A strict, bounded reader of GGUF headers (the llama.cpp / GGML model format).

Layout of a GGUF file (v2 and v3; everything little-endian)::

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count * ( key: string | value_type u32 | value )
    tensor_count * ( name: string | n_dims u32 | dims u64 * n_dims | ggml_type u32 | offset u64 )
    padding to ``general.alignment`` (default 32)      ← ``GgufLayout.header_len``
    tensor data: each tensor at header_len + offset, offsets multiples of the alignment

    string = length u64 | UTF-8 bytes
    array  = item_type u32 | count u64 | count * item

``dims`` are stored innermost first (``ne[0]`` is the length of a row), the reverse of
numpy's order; :attr:`GgufTensor.shape` keeps the file's order, as ``gguf.GGUFReader``'s
``ReaderTensor.shape`` does. Quantised types pack ``block_size`` elements of a row into
``type_size`` bytes (:data:`GGML_TYPES`), so ``ne[0]`` must be a multiple of the block.

Everything the file declares is bounded before it is trusted: the header may be at most
:data:`MAX_HEADER` bytes; every count and length must fit in the bytes that remain (so a
declared 2**60 tensors or a 2**63-byte string fails at once, allocating nothing); at most
:data:`MAX_DIMS` dimensions (GGML's own limit) and :data:`MAX_ARRAY_DEPTH` levels of
nested arrays; keys and tensor names at most :data:`MAX_NAME` bytes. Tensors must lie
inside the file, not overlap, start at aligned offsets and have exactly the byte size their
type and shape give. Big-endian files (whose version reads as ``n << 24`` here) and other
versions than 2 and 3 are refused.

Public API: :func:`parse_gguf` (the first bytes of a file → :class:`GgufLayout`, or
``WregError`` with ``ErrorCode.TENSORS_INVALID``; ``NeedMoreBytes`` when the bytes given
end inside the header), :func:`load_gguf` (a path, strict) and :func:`read_gguf_layout`
(a path, ``None`` for anything that is not a valid GGUF file; what the chunker uses).
Files are read in growing pieces, so a small header costs one small read.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from wreg.core.errors import ErrorCode, WregError

MAGIC: Final = b"GGUF"
VERSIONS: Final = (2, 3)
DEFAULT_ALIGNMENT: Final = 32
MAX_HEADER: Final = 100 * 1024 * 1024  # as safetensors; real vocabularies need a few MiB
MAX_DIMS: Final = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH: Final = 2  # an array of arrays at most
MAX_NAME: Final = 65_535  # bytes of a key or tensor name (llama.cpp: tensor names < 64)
MAX_ALIGNMENT: Final = 1 << 20
# Metadata arrays longer than this, and strings longer than METADATA_STRING_CAP, are
# reported as a summary dict instead of their values, so a layout stays small.
METADATA_ARRAY_CAP: Final = 64
METADATA_STRING_CAP: Final = 64 * 1024
_FIRST_READ: Final = 1 << 20

# GGML type id → (name, block size in elements, bytes per block), as
# gguf.constants.GGML_QUANT_SIZES (gguf 0.19); tests/core/test_gguf.py checks they agree.
GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# Metadata value type id → (name, struct format of a scalar or None).
_UINT32: Final = 4
_STRING: Final = 8
_ARRAY: Final = 9
VALUE_TYPES: Final[dict[int, tuple[str, str | None]]] = {
    0: ("UINT8", "<B"),
    1: ("INT8", "<b"),
    2: ("UINT16", "<H"),
    3: ("INT16", "<h"),
    4: ("UINT32", "<I"),
    5: ("INT32", "<i"),
    6: ("FLOAT32", "<f"),
    7: ("BOOL", "<?"),
    8: ("STRING", None),
    9: ("ARRAY", None),
    10: ("UINT64", "<Q"),
    11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}
# The fewest bytes one value of each type can take (a string: its length; an array: its
# item type and count); counts are checked against this before anything is looped over.
_MIN_SIZE: Final = {
    t: (struct.calcsize(fmt) if fmt else (8 if t == _STRING else 12))
    for t, (_n, fmt) in VALUE_TYPES.items()
}
_MIN_KV: Final = 8 + 4 + 1  # key length, value type, the smallest value
_MIN_TENSOR_INFO: Final = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_FIXED: Final = struct.Struct("<4sIQQ")


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """One tensor: ``begin``/``end`` are absolute byte offsets in the file.

    ``shape`` is in the file's order (innermost dimension first), as ``GGUFReader``
    reports it; numpy's shape is ``shape[::-1]``.
    """

    name: str
    type: str
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
class GgufLayout:
    """A parsed GGUF header: tensor data starts at ``header_len`` (after the padding)."""

    version: int
    header_len: int
    alignment: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[GgufTensor] = field(default_factory=list)  # in file order


class NeedMoreBytes(Exception):
    """``parse_gguf`` was given fewer bytes than the header takes; ``needed`` at least."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"gguf: header continues past byte {needed}")
        self.needed = needed


def _invalid(message: str) -> WregError:
    return ErrorCode.TENSORS_INVALID.error(f"gguf: {message}")


class _Cursor:
    """Reads the header's values, checking every length against what is left."""

    def __init__(self, head: bytes, file_size: int) -> None:
        self.buf = memoryview(head)
        self.pos = 0
        # Bytes the header may span: the file's, capped at MAX_HEADER.
        self.limit = min(file_size, MAX_HEADER)

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > self.limit:
            if self.limit == MAX_HEADER:
                raise _invalid(f"header is longer than {MAX_HEADER} bytes")
            raise _invalid(f"truncated: the header runs past the end of the file ({end} bytes)")
        if end > len(self.buf):
            raise NeedMoreBytes(end)
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str, min_size: int) -> int:
        n: int = self.unpack("<Q")
        if n * min_size > self.limit - self.pos:
            raise _invalid(f"{what} count {n} cannot fit in the header")
        return n

    def string(self, what: str, cap: int | None = None) -> str:
        n: int = self.unpack("<Q")
        if cap is not None and n > cap:
            raise _invalid(f"{what} is {n} bytes long, more than {cap}")
        raw = self.take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise _invalid(f"{what} is not UTF-8") from None

    def value(self, vtype: int, depth: int, what: str) -> Any:
        if vtype not in VALUE_TYPES:
            raise _invalid(f"{what} has unknown value type {vtype}")
        fmt = VALUE_TYPES[vtype][1]
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            n: int = self.unpack("<Q")
            raw = self.take(n)
            if n > METADATA_STRING_CAP:
                return {"type": "string", "length": n}
            try:
                return str(raw, "utf-8")
            except UnicodeDecodeError:
                raise _invalid(f"{what} is not UTF-8") from None
        if depth >= MAX_ARRAY_DEPTH:
            raise _invalid(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH}")
        itype: int = self.unpack("<I")
        if itype not in VALUE_TYPES:
            raise _invalid(f"{what} has arrays of unknown value type {itype}")
        length = self.count(f"{what} array", _MIN_SIZE[itype])
        item_fmt = VALUE_TYPES[itype][1]
        if length > METADATA_ARRAY_CAP:
            self.skip(itype, length, depth + 1, what)
            return {"type": "array", "item_type": VALUE_TYPES[itype][0], "length": length}
        if item_fmt is not None:
            raw = self.take(length * struct.calcsize(item_fmt))
            return list(struct.unpack(f"<{length}{item_fmt[1]}", raw))
        return [self.value(itype, depth + 1, what) for _ in range(length)]

    def skip(self, vtype: int, length: int, depth: int, what: str) -> None:
        """Step over ``length`` values of ``vtype`` (strings are not decoded)."""
        fmt = VALUE_TYPES[vtype][1]
        if fmt is not None:  # fixed-size items: one step
            self.take(length * struct.calcsize(fmt))
        elif vtype == _STRING:
            for _ in range(length):
                self.take(self.unpack("<Q"))
        else:
            if depth >= MAX_ARRAY_DEPTH:
                raise _invalid(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH}")
            for _ in range(length):
                itype: int = self.unpack("<I")
                if itype not in VALUE_TYPES:
                    raise _invalid(f"{what} has arrays of unknown value type {itype}")
                self.skip(itype, self.count(f"{what} array", _MIN_SIZE[itype]), depth + 1, what)


def parse_gguf(head: bytes, file_size: int) -> GgufLayout:
    """The layout of a GGUF file of ``file_size`` bytes whose first bytes are ``head``.

    Raises ``WregError`` (``ErrorCode.TENSORS_INVALID``, one line saying what is wrong)
    for anything but a valid little-endian GGUF v2/v3 file, and :class:`NeedMoreBytes` when
    ``head`` ends inside the header but the file goes on (read more and call again).
    """
    if len(head) < _FIXED.size:
        if file_size < _FIXED.size:
            raise _invalid("truncated: shorter than the 24-byte preamble")
        raise NeedMoreBytes(_FIXED.size)
    magic, version, n_tensors, n_kv = _FIXED.unpack_from(head)
    if magic != MAGIC:
        raise _invalid("not a GGUF file (bad magic)")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in VERSIONS:
            raise _invalid("big-endian GGUF files are not supported")
        raise _invalid(f"unsupported GGUF version {version} (supported: 2, 3)")
    cur = _Cursor(head, file_size)
    cur.pos = _FIXED.size
    if n_kv * _MIN_KV > cur.limit - cur.pos:
        raise _invalid(f"metadata count {n_kv} cannot fit in the header")
    if n_tensors * _MIN_TENSOR_INFO > cur.limit - cur.pos:
        raise _invalid(f"tensor count {n_tensors} cannot fit in the header")

    metadata: dict[str, Any] = {}
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string("metadata key", MAX_NAME)
        if key in metadata:
            raise _invalid(f"metadata key {key!r} appears twice")
        vtype: int = cur.unpack("<I")
        metadata[key] = cur.value(vtype, 0, f"metadata {key!r}")
        if key == "general.alignment":
            value = metadata[key]
            if vtype != _UINT32:
                raise _invalid("general.alignment is not a UINT32")
            if value == 0 or value & (value - 1) or value > MAX_ALIGNMENT:
                raise _invalid(f"general.alignment {value} is not a power of two ≤ {MAX_ALIGNMENT}")
            alignment = value

    infos: list[tuple[str, str, tuple[int, ...], int, int]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = cur.string("tensor name", MAX_NAME)
        if name in names:
            raise _invalid(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims: int = cur.unpack("<I")
        if n_dims > MAX_DIMS:
            raise _invalid(f"tensor {name!r} has {n_dims} dimensions, more than {MAX_DIMS}")
        shape = struct.unpack(f"<{n_dims}Q", cur.take(8 * n_dims))
        type_id: int = cur.unpack("<I")
        if type_id not in GGML_TYPES:
            raise _invalid(f"tensor {name!r} has unknown GGML type {type_id}")
        type_name, block, type_size = GGML_TYPES[type_id]
        offset: int = cur.unpack("<Q")
        if any(d >= 1 << 63 for d in shape):  # GGML's dims are int64
            raise _invalid(f"tensor {name!r} has a dimension of 2**63 or more")
        row = shape[0] if shape else 1
        if row % block:
            raise _invalid(
                f"tensor {name!r}: a row of {row} is not a multiple of the "
                f"{type_name} block of {block}"
            )
        nbytes = math.prod(shape) // block * type_size
        infos.append((name, type_name, shape, offset, nbytes))

    data_start = cur.pos + (-cur.pos % alignment)
    if data_start > file_size:
        if infos:
            raise _invalid(
                f"truncated: the data section would start at byte {data_start}, "
                "past the end of the file"
            )
        data_start = file_size  # no tensors: the trailing padding may be left out
    tensors: list[GgufTensor] = []
    for name, type_name, shape, offset, nbytes in infos:
        if offset % alignment:
            raise _invalid(f"tensor {name!r} at offset {offset} is not aligned to {alignment}")
        begin = data_start + offset
        if begin + nbytes > file_size:
            raise _invalid(
                f"tensor {name!r} ({nbytes} bytes at {begin}) ends past the end of the file"
            )
        tensors.append(GgufTensor(name, type_name, tuple(shape), begin, begin + nbytes))
    by_offset = sorted(tensors, key=lambda t: (t.begin, t.end))
    for prev, cur_t in itertools.pairwise(by_offset):
        if cur_t.begin < prev.end:
            raise _invalid(f"tensors {prev.name!r} and {cur_t.name!r} overlap")
    return GgufLayout(version, data_start, alignment, metadata, tensors)


def load_gguf(path: str | os.PathLike[str]) -> GgufLayout:
    """The layout of the GGUF file at ``path``; ``WregError`` if it is not a valid one.

    Reads only the header: 1 MiB first, then twice as much each time the header goes on,
    never more than :data:`MAX_HEADER` bytes.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(min(size, _FIRST_READ))
        while True:
            try:
                return parse_gguf(head, size)
            except NeedMoreBytes as more:
                want = min(max(more.needed, 2 * len(head)), size, MAX_HEADER)
                if want <= len(head):  # cannot happen: parse_gguf bounds by both
                    raise _invalid("truncated header") from None
                more_bytes = f.read(want - len(head))
                if not more_bytes:
                    raise _invalid("truncated: the file shrank while its header was read") from None
                head += more_bytes


def read_gguf_layout(path: str | os.PathLike[str]) -> GgufLayout | None:
    """The layout of the GGUF file at ``path``, or None if it is not a valid one."""
    try:
        return load_gguf(path)
    except (WregError, OSError):
        return None
