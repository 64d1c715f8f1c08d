"""Push a checkpoint from memory: a dict of arrays becomes ``model.safetensors`` in the
registry without the file ever being written to disk.

The file is *virtual*: the safetensors header is built in memory (a few KiB per thousand
tensors) and every tensor's bytes are a ``memoryview`` of the caller's array, so the
layout costs no copy of the checkpoint. The bytes are exactly what
``safetensors.numpy.save`` writes for the same dict: compact JSON header with
``__metadata__`` first (keys sorted), tensors ordered by dtype (the reference
implementation's ``Dtype`` enum, highest first) then by name, the header padded with
spaces to a multiple of 8. The file is cut with the same ``plan_safetensors`` a push from
disk uses, so its chunks, and the manifest digest, are those of pushing the saved file.

Memory, beyond the caller's arrays:

- the header, and one chunk-sized read buffer per upload worker (as a push from disk);
- a contiguous little-endian copy of each array that is not already one (a transposed
  view, a big-endian array), held until the push returns: pass contiguous arrays and
  nothing is copied;
- torch tensors on another device (CUDA) are copied to host memory, tensor by tensor, as
  ``tensor.cpu()`` does; CPU tensors are shared, not copied.

The arrays must not change until the push returns: each chunk is hashed, then read again
and checked when it is sent, and a tensor modified in between fails the push with
``DIGEST_MISMATCH`` (nothing is committed). In an async training loop, ``await`` the push
before the next optimizer step, or push copies.

Metadata convention (stored in the manifest's ``metadata``, any JSON object is accepted)::

    {"step": 1200, "run_id": "run-2026-12-02a", "parent": "team/model@step-1100"}

``parent`` names the checkpoint this one continues from (a tag or ``repo@blake3:…``).
"""

from __future__ import annotations

import bisect
import json
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from wreg.core.chunking import (
    ChunkParams,
    ChunkSpec,
    TensorRange,
    plan_safetensors,
    read_safetensors_layout,
)
from wreg.core.errors import ErrorCode, WregError
from wreg.core.manifest import FileEntry, Manifest, validate_path
from wreg.core.sizes import MAX_JSON_DEPTH, MiB

if TYPE_CHECKING:
    from wreg._push import MemoryFile

DEFAULT_FILENAME: Final = "model.safetensors"
# Manifest metadata pushed with a checkpoint: small by intent (a step, ids, a few
# numbers), far below the manifest's own MAX_MANIFEST_BYTES so the file list always fits.
MAX_METADATA_BYTES: Final = 1 * MiB
# The manifest document is depth 1 and its "metadata" object depth 2.
_MAX_METADATA_DEPTH: Final = MAX_JSON_DEPTH - 1
# The safetensors format's own header limit (its reference implementation refuses more).
_MAX_HEADER: Final = 100_000_000
# Extra small files (config.json, …) are held in memory whole: bounded.
MAX_EXTRA_FILE_BYTES: Final = 64 * MiB

# numpy dtype name -> safetensors dtype (bfloat16 and float8 are ml_dtypes' names), in
# the order of the reference implementation's Dtype enum.
NUMPY_DTYPES: Final[Mapping[str, str]] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e8m0fnu": "F8_E8M0",
    "int16": "I16",
    "uint16": "U16",
    "float16": "F16",
    "bfloat16": "BF16",
    "int32": "I32",
    "uint32": "U32",
    "float32": "F32",
    "complex64": "C64",
    "float64": "F64",
    "int64": "I64",
    "uint64": "U64",
}
# torch dtype (``str(tensor.dtype)``) -> safetensors dtype.
TORCH_DTYPES: Final[Mapping[str, str]] = {
    "torch.bool": "BOOL",
    "torch.uint8": "U8",
    "torch.int8": "I8",
    "torch.float8_e5m2": "F8_E5M2",
    "torch.float8_e4m3fn": "F8_E4M3",
    "torch.float8_e8m0fnu": "F8_E8M0",
    "torch.int16": "I16",
    "torch.uint16": "U16",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int32": "I32",
    "torch.uint32": "U32",
    "torch.float32": "F32",
    "torch.complex64": "C64",
    "torch.float64": "F64",
    "torch.int64": "I64",
    "torch.uint64": "U64",
}
# Layout order of the reference implementation: its Dtype enum (the order NUMPY_DTYPES
# lists them in), laid out highest first.
_RANK: Final = {name: rank for rank, name in enumerate(NUMPY_DTYPES.values())}

_ITEMSIZE: Final = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 1),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 2),
    **dict.fromkeys(("I32", "U32", "F32"), 4),
    **dict.fromkeys(("C64", "F64", "I64", "U64"), 8),
}


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    data: memoryview
    """The tensor's bytes, 1-D unsigned bytes (a view of the caller's array, or a copy)."""
    copied: bool


def _short(name: object) -> str:
    """``repr(name)``, cut short: an error message stays one readable line."""
    text = repr(name)
    return text if len(text) <= 120 else text[:120] + "…"


def _unsupported(name: object, why: str) -> WregError:
    return ErrorCode.TENSORS_UNSUPPORTED.error(f"cannot push tensor {_short(name)}: {why}")


def _from_numpy(name: str, arr: np.ndarray[Any, Any]) -> _Tensor:
    dtype = NUMPY_DTYPES.get(arr.dtype.name)
    if dtype is None or arr.dtype.fields is not None:
        raise _unsupported(
            name,
            f"numpy dtype {arr.dtype} has no safetensors type (supported: "
            f"{', '.join(NUMPY_DTYPES)})",
        )
    copied = False
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))  # safetensors is little-endian
        copied = True
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
        copied = True
    shape = tuple(int(d) for d in arr.shape)
    # A 1-D byte view of the same memory: reshape(-1) of a C-contiguous array is a view.
    data = arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")
    return _Tensor(name, dtype, shape, data, copied)


def _from_torch(name: str, t: Any) -> _Tensor:
    import torch  # only reached for a torch.Tensor: torch is imported already

    dtype = TORCH_DTYPES.get(str(t.dtype))
    if dtype is None:
        raise _unsupported(name, f"torch dtype {t.dtype} has no safetensors type")
    if t.layout != torch.strided:
        raise _unsupported(name, f"a {t.layout} tensor: push tensor.to_dense()")
    if t.device.type == "meta":
        raise _unsupported(name, "a meta tensor has no data")
    t = t.detach().resolve_conj().resolve_neg()  # views with a lazy conj/neg bit: applied
    copied = False
    if t.device.type != "cpu":
        t = t.cpu()
        copied = True
    if not t.is_contiguous():
        t = t.contiguous()
        copied = True
    shape = tuple(int(d) for d in t.shape)
    if t.numel() == 0:
        return _Tensor(name, dtype, shape, memoryview(b""), copied)
    # Every dtype (bfloat16 and float8 included, which numpy lacks) as its raw bytes,
    # sharing the tensor's memory.
    raw = t.reshape(-1).view(torch.uint8).numpy()
    return _Tensor(name, dtype, shape, memoryview(raw), copied)


def _is_torch_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")  # never imported here: a tensor means torch is loaded
    return torch is not None and isinstance(value, torch.Tensor)


def collect(tensors: Mapping[Any, Any]) -> list[_Tensor]:
    """Check ``tensors`` (name -> numpy array or torch tensor) and view their bytes."""
    if not isinstance(tensors, Mapping):
        raise ErrorCode.TENSORS_UNSUPPORTED.error(
            f"push_tensors needs a mapping of name to array, not {type(tensors).__name__}"
        )
    out: list[_Tensor] = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise ErrorCode.TENSORS_INVALID.error(
                f"tensor names must be strings, not {type(name).__name__} ({_short(name)})"
            )
        if not name or name == "__metadata__":
            raise ErrorCode.TENSORS_INVALID.error(f"{_short(name)} cannot be a tensor name")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ErrorCode.TENSORS_INVALID.error(
                f"tensor name {_short(name)} is not valid UTF-8 text"
            ) from None
        if isinstance(value, np.ndarray):
            out.append(_from_numpy(name, value))
        elif _is_torch_tensor(value):
            out.append(_from_torch(name, value))
        else:
            what = type(value).__module__ + "." + type(value).__qualname__
            raise _unsupported(name, f"a {what}, not a numpy array or torch tensor")
        last = out[-1]
        item = _ITEMSIZE[last.dtype]
        if len(last.data) != item * math.prod(last.shape):
            raise _unsupported(name, "its bytes do not match its dtype and shape")
    return out


def _check_file_metadata(file_metadata: Mapping[Any, Any] | None) -> dict[str, str] | None:
    if file_metadata is None:
        return None
    if not isinstance(file_metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in file_metadata.items()
    ):
        raise ErrorCode.TENSORS_INVALID.error(
            "file_metadata (the safetensors __metadata__) must map strings to strings"
        )
    return {k: file_metadata[k] for k in sorted(file_metadata)}


class TensorFile:
    """A safetensors file laid out in memory: header bytes, then each tensor's bytes.

    ``view`` is what push reads: a slice of one tensor's memory (no copy) when the range
    lies inside it, a fresh copy only for ranges across tensors (packs of small tensors,
    at most ``CHUNK_PACK`` bytes) or across the header's end.
    """

    def __init__(
        self, tensors: list[_Tensor], file_metadata: Mapping[str, str] | None = None
    ) -> None:
        ordered = sorted(tensors, key=lambda t: (-_RANK[t.dtype], t.name))
        header: dict[str, Any] = {}
        if file_metadata is not None:
            header["__metadata__"] = dict(file_metadata)
        ranges: list[TensorRange] = []
        offset = 0
        for t in ordered:
            end = offset + len(t.data)
            header[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [offset, end],
            }
            ranges.append(TensorRange(offset, end, t.dtype))
            offset = end
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        if len(raw) > _MAX_HEADER:
            raise ErrorCode.TENSORS_INVALID.error(
                f"the safetensors header would be {len(raw)} bytes, over the format's "
                f"limit of {_MAX_HEADER}: too many tensors or too much file_metadata"
            )
        self.header = struct.pack("<Q", len(raw)) + raw
        self.ranges = ranges
        self.copied_bytes = sum(len(t.data) for t in ordered if t.copied)
        self._segments: list[memoryview] = [memoryview(self.header)]
        self._starts: list[int] = [0]
        at = len(self.header)
        for t in ordered:
            if len(t.data):
                self._segments.append(t.data)
                self._starts.append(at)
                at += len(t.data)
        self.size = at

    def plan(self, params: ChunkParams = ChunkParams()) -> list[ChunkSpec]:
        """The chunks ``plan_file`` would cut from this file on disk."""
        return plan_safetensors(len(self.header), self.ranges, self.size, params)

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} outside a file of {self.size} bytes")
        i = bisect.bisect_right(self._starts, offset) - 1
        seg, start = self._segments[i], self._starts[i]
        if offset + length <= start + len(seg):
            return seg[offset - start : offset - start + length]
        out = bytearray(length)
        at = 0
        while at < length:
            seg, start = self._segments[i], self._starts[i]
            lo = offset + at - start
            n = min(len(seg) - lo, length - at)
            out[at : at + n] = seg[lo : lo + n]
            at += n
            i += 1
        return memoryview(out)

    def to_bytes(self) -> bytes:
        """The whole file (tests; a push never builds it)."""
        return b"".join(self._segments)


class BytesFile:
    """A small file given as bytes (``config.json``), cut as ``plan_file`` would cut it."""

    def __init__(self, relpath: str, data: bytes) -> None:
        self.data = memoryview(data).cast("B")
        self.size = len(self.data)
        self._relpath = relpath

    def plan(self, params: ChunkParams = ChunkParams()) -> list[ChunkSpec]:
        if self.size == 0:
            return []
        if self._relpath.endswith(".safetensors"):
            layout = read_safetensors_layout(bytes(self.data[: 8 + _MAX_HEADER]), self.size)
            if layout is not None:
                return plan_safetensors(layout[0], layout[1], self.size, params)
        if self.size <= params.cdc_min:
            return [ChunkSpec(0, self.size)]
        from pyfastcdc import FastCDC

        cdc = FastCDC(params.cdc_avg, min_size=params.cdc_min, max_size=params.cdc_max)
        return [ChunkSpec(c.offset, c.length) for c in cdc.cut_buf(self.data)]

    def view(self, offset: int, length: int) -> memoryview:
        return self.data[offset : offset + length]


def extra_files(files: Mapping[Any, Any] | None, filename: str) -> list[tuple[str, BytesFile]]:
    """Check the small files pushed beside the checkpoint (path -> bytes)."""
    out: list[tuple[str, BytesFile]] = []
    for path, data in (files or {}).items():
        if not isinstance(path, str):
            raise ErrorCode.PATH_UNSAFE.error(f"file paths must be strings, not {_short(path)}")
        validate_path(path)
        if path == filename:
            raise ErrorCode.PATH_UNSAFE.error(f"{path!r} is the checkpoint's own file name")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ErrorCode.TENSORS_UNSUPPORTED.error(
                f"file {path!r} must be bytes, not {type(data).__name__}"
            )
        if memoryview(data).nbytes > MAX_EXTRA_FILE_BYTES:
            raise ErrorCode.TENSORS_UNSUPPORTED.error(
                f"file {path!r} is over {MAX_EXTRA_FILE_BYTES} bytes: push it from disk"
            )
        out.append((path, BytesFile(path, bytes(data))))
    return out


def check_metadata(metadata: Mapping[Any, Any] | None) -> dict[str, Any]:
    """``metadata`` as a plain JSON object, or ``MANIFEST_INVALID`` naming what is wrong:
    string keys only, finite numbers, at most ``_MAX_METADATA_DEPTH`` levels, and at most
    ``MAX_METADATA_BYTES`` once serialised."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ErrorCode.MANIFEST_INVALID.error(
            f"metadata must be a mapping, not {type(metadata).__name__}"
        )
    out = _plain(metadata, ())
    assert isinstance(out, dict)  # noqa: S101 - a Mapping becomes a dict
    size = len(json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ErrorCode.MANIFEST_INVALID.error(
            f"metadata is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}"
        )
    return out


def _where(path: tuple[str | int, ...]) -> str:
    text = "metadata" + "".join(f"[{p!r}]" for p in path)
    return text if len(text) <= 200 else text[:200] + "…"


def _plain(value: Any, path: tuple[str | int, ...]) -> Any:
    """A JSON copy of ``value``, checked; containers nest at most ``_MAX_METADATA_DEPTH``
    levels (the metadata object is level 1), which bounds the recursion."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ErrorCode.MANIFEST_INVALID.error(
                    f"{_where(path)} is not valid UTF-8 text"
                ) from None
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ErrorCode.MANIFEST_INVALID.error(f"{_where(path)} is {value}: not JSON")
        return float(value)
    if isinstance(value, Mapping | list | tuple) and len(path) >= _MAX_METADATA_DEPTH:
        raise ErrorCode.MANIFEST_INVALID.error(
            f"metadata nests deeper than {_MAX_METADATA_DEPTH} levels (at {_where(path)})"
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ErrorCode.MANIFEST_INVALID.error(
                    f"metadata keys must be strings: {_where(path)} has key {k!r}"[:300]
                )
            out[k] = _plain(v, (*path, k))
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, np.generic) and isinstance(value.item(), int | float | bool):
        return _plain(value.item(), path)  # np.int64(step) from a training loop
    raise ErrorCode.MANIFEST_INVALID.error(
        f"{_where(path)} is a {type(value).__name__}, not a JSON value"
    )


def prepare(
    tensors: Mapping[Any, Any],
    filename: str = DEFAULT_FILENAME,
    file_metadata: Mapping[Any, Any] | None = None,
    files: Mapping[Any, Any] | None = None,
) -> list[tuple[str, MemoryFile]]:
    """The files ``push_tensors`` pushes: the checkpoint as ``filename``, then ``files``.

    Everything is checked here, before any byte is hashed or sent.
    """
    if not isinstance(filename, str) or not filename.endswith(".safetensors"):
        raise ErrorCode.PATH_UNSAFE.error(
            f"filename {filename!r} must end in .safetensors (it is a safetensors file)"
        )
    validate_path(filename)
    checkpoint = TensorFile(collect(tensors), _check_file_metadata(file_metadata))
    out: list[tuple[str, MemoryFile]] = [(filename, checkpoint), *extra_files(files, filename)]
    # The paths must make a tree (``a`` and ``a/b`` cannot both be files): checked now, not
    # when the manifest is built after the upload.
    Manifest.build(FileEntry.of(path, ()) for path, _ in out)
    return out
