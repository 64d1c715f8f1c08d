"""Cut files into chunks: format-aware for safetensors and GGUF, content-defined otherwise.

Tensor files (``plan_tensors``): the header is its own chunk (pieces of at most
``chunk_max``); every tensor is cut into pieces of at most ``chunk_max`` counted from the
tensor's own start, so an unchanged tensor yields the same chunks even when the header or
earlier tensors change size. Runs of tensors smaller than ``chunk_pack`` are packed into
one chunk (up to ``chunk_pack`` bytes) so a model's many biases and norms are not one
request each. Every piece carries its tensor's dtype hint so the codec can pick a float
transform. Bytes no tensor claims are kept in pieces of their own.

- ``.safetensors``: the header is the 8-byte length + JSON; dtypes are safetensors'.
- ``.gguf`` (``wreg.core.gguf``): the header is everything before the aligned data
  section (metadata, tensor infos, padding). A tensor's range runs on over its alignment
  padding (up to the next tensor or the end of the file), which depends only on its own
  size, so the zero bytes do not become tiny chunks of their own. GGML F32, F16 and BF16
  are hinted as the safetensors dtypes of the same name; quantised and integer types get
  no hint (opaque bytes, plain zstd).

Anything else (and a tensor file whose header does not parse or validate): FastCDC from
the compiled ``pyfastcdc``; files smaller than ``cdc_min`` are one chunk.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyfastcdc import FastCDC

from wreg.core.gguf import GgufLayout, read_gguf_layout
from wreg.core.sizes import CDC_AVG, CDC_MAX, CDC_MIN, CHUNK_MAX, CHUNK_PACK

_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
# GGML type → the codec's dtype hint (the safetensors names encoding.py knows).
_GGUF_DTYPE_HINT = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """A byte range of a file; ``dtype`` is a safetensors dtype hint for the codec."""

    offset: int
    length: int
    dtype: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """Sizes used to cut files (defaults from ``wreg.core.sizes``; benches vary them)."""

    chunk_max: int = CHUNK_MAX
    chunk_pack: int = CHUNK_PACK
    cdc_avg: int = CDC_AVG
    cdc_min: int = CDC_MIN
    cdc_max: int = CDC_MAX


@dataclass(frozen=True, slots=True)
class TensorRange:
    """A tensor's byte range relative to the start of the data section; dtype: codec hint."""

    begin: int
    end: int
    dtype: str | None


def plan_file(path: str | os.PathLike[str], params: ChunkParams = ChunkParams()) -> list[ChunkSpec]:
    """The chunk boundaries of one file, covering it exactly, in order."""
    size = os.stat(path).st_size
    if size == 0:
        return []
    if str(path).endswith(".safetensors"):
        with open(path, "rb") as f:
            prefix = f.read(8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            head = prefix + f.read(n) if 8 + n <= min(size, 8 + _MAX_HEADER) else b""
            layout = read_safetensors_layout(head, size)
        if layout is not None:
            header_len, tensors = layout
            return plan_tensors(header_len, tensors, size, params)
    elif str(path).endswith(".gguf"):
        gguf = read_gguf_layout(path)
        if gguf is not None:
            return plan_tensors(gguf.header_len, gguf_tensor_ranges(gguf, size), size, params)
    return plan_cdc(path, size, params)


def read_safetensors_layout(head: bytes, file_size: int) -> tuple[int, list[TensorRange]] | None:
    """(header length incl. the 8-byte prefix, tensors sorted by offset) or None if invalid."""
    if len(head) < 8:
        return None
    (n,) = struct.unpack_from("<Q", head)
    if n > _MAX_HEADER or 8 + n > min(len(head), file_size):
        return None
    try:
        doc = json.loads(head[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    data_size = file_size - 8 - n
    tensors = []
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            dtype = str(info["dtype"])
        except (TypeError, KeyError, ValueError):
            return None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size):
            return None
        tensors.append(TensorRange(begin, end, dtype))
    tensors.sort(key=lambda t: (t.begin, t.end))
    for prev, cur in itertools.pairwise(tensors):
        if cur.begin < prev.end:
            return None  # overlapping tensors: not a layout we can cut safely
    return 8 + n, tensors


def gguf_tensor_ranges(layout: GgufLayout, file_size: int) -> list[TensorRange]:
    """A GGUF file's tensors relative to its data section, sorted, each with its padding.

    A tensor's range is extended to its next aligned end, but never past the next tensor's
    start or the end of the file.
    """
    ordered = sorted(layout.tensors, key=lambda t: (t.begin, t.end))
    ranges = []
    for i, t in enumerate(ordered):
        limit = ordered[i + 1].begin if i + 1 < len(ordered) else file_size
        end = min(t.end + (-t.nbytes % layout.alignment), limit) if t.nbytes else t.end
        ranges.append(
            TensorRange(
                t.begin - layout.header_len, end - layout.header_len, _GGUF_DTYPE_HINT.get(t.type)
            )
        )
    return ranges


def plan_tensors(
    header_len: int, tensors: list[TensorRange], file_size: int, params: ChunkParams = ChunkParams()
) -> list[ChunkSpec]:
    """Chunks of a tensor file: header pieces, then tensor-aligned pieces (module docstring).

    ``tensors`` are relative to ``header_len``, sorted by offset and non-overlapping.
    """
    specs = list(_pieces(0, header_len, None, params.chunk_max))
    pos = header_len
    pack: list[ChunkSpec] = []

    def flush() -> None:
        if pack:
            dtypes = {p.dtype for p in pack}
            dtype = dtypes.pop() if len(dtypes) == 1 else None
            specs.append(
                ChunkSpec(pack[0].offset, pack[-1].offset + pack[-1].length - pack[0].offset, dtype)
            )
            pack.clear()

    for t in tensors:
        begin, end = header_len + t.begin, header_len + t.end
        if begin > pos:  # bytes no tensor claims: keep them, unpacked
            flush()
            specs.extend(_pieces(pos, begin, None, params.chunk_max))
        if end == begin:
            continue
        length = end - begin
        if length < params.chunk_pack:
            packed = pack[-1].offset + pack[-1].length - pack[0].offset if pack else 0
            if packed + length > params.chunk_pack:
                flush()
            pack.append(ChunkSpec(begin, length, t.dtype))
        else:
            flush()
            specs.extend(_pieces(begin, end, t.dtype, params.chunk_max))
        pos = end
    flush()
    if file_size > pos:
        specs.extend(_pieces(pos, file_size, None, params.chunk_max))
    return specs


plan_safetensors = plan_tensors  # the name benches and older callers use


def _pieces(begin: int, end: int, dtype: str | None, chunk_max: int) -> Iterator[ChunkSpec]:
    for offset in range(begin, end, chunk_max):
        yield ChunkSpec(offset, min(chunk_max, end - offset), dtype)


def plan_cdc(
    path: str | os.PathLike[str], size: int, params: ChunkParams = ChunkParams()
) -> list[ChunkSpec]:
    if size <= params.cdc_min:
        return [ChunkSpec(0, size)]
    cdc = FastCDC(params.cdc_avg, min_size=params.cdc_min, max_size=params.cdc_max)
    return [ChunkSpec(c.offset, c.length) for c in cdc.cut_file(Path(path))]
