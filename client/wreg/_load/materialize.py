"""The consumer side of a load: a ready tensor's verified bytes become an array.

* CPU (numpy, or torch with ``device="cpu"``): a tensor of at least ``MAP_MIN`` bytes is
  a copy-on-write memory map of its file range (zero copy: the page cache is the
  memory; writing into the array never reaches the file; a copy would pay fresh pages'
  faults on top); a smaller one is read into fresh
  memory, and so is any tensor once the process is out of maps (``vm.max_map_count``).
* A torch device (``device="cuda:0"``): the bytes go through a small ring of pinned host
  buffers (``Staging``) and are copied to the device asynchronously, piece by piece, so
  host memory stays bounded by the ring whatever the model's size.
* ``dtype=`` converts on the way (on the device, after the copy).

bf16 and fp8 arrays use ``ml_dtypes`` (imported only when such a tensor appears);
torch is imported only for ``framework="torch"``.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from wreg._load.header import ITEMSIZE
from wreg._load.produce import Ready
from wreg.core.errors import ErrorCode

if TYPE_CHECKING:
    import torch

MAP_MIN: Final = 64 << 10
_PAGE: Final = mmap.ALLOCATIONGRANULARITY
# Pinned staging for device loads: this many buffers of this many bytes.
STAGING_BUFFERS: Final = 4
STAGING_BYTES: Final = 32 << 20

_NUMPY: Final = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
}
_ML_DTYPES: Final = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
# torch's names are numpy's, and ml_dtypes' for the types numpy lacks.
_TORCH: Final = _NUMPY | _ML_DTYPES


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    if dtype in _NUMPY:
        return np.dtype(_NUMPY[dtype])
    import ml_dtypes

    found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype]))
    return found


def read_bytes(ready: Ready, mapped: bool = True) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The tensor's bytes as a writable uint8 array: mapped copy-on-write, or read."""
    want, fd = ready.want, ready.source.fd
    n = want.nbytes
    if n == 0:
        return np.empty(0, np.uint8)
    if mapped and n >= MAP_MIN:
        start = want.begin - want.begin % _PAGE
        try:
            view = mmap.mmap(fd, want.end - start, access=mmap.ACCESS_COPY, offset=start)
        except OSError:  # out of maps (vm.max_map_count): read it instead
            pass
        else:
            return np.frombuffer(view, np.uint8, n, want.begin - start)
    out = np.empty(n, np.uint8)
    view_out = memoryview(out.data)
    done = 0
    while done < n:
        got = os.preadv(fd, [view_out[done:]], want.begin + done)
        if got <= 0:
            raise ErrorCode.TENSORS_INVALID.error(
                f"{ready.source.entry.path}: tensor {want.info.name!r} is cut short"
            )
        done += got
    return out


def to_numpy(ready: Ready, dtype: Any = None) -> np.ndarray[Any, Any]:
    raw = read_bytes(ready)
    array = raw.view(numpy_dtype(ready.want.info.dtype)).reshape(ready.want.shape)
    if dtype is not None and np.dtype(dtype) != array.dtype:
        return array.astype(dtype)
    return array


def torch_dtype(dtype: str) -> torch.dtype:
    import torch

    found = getattr(torch, _TORCH[dtype], None)
    if found is None:
        raise ErrorCode.TENSORS_UNSUPPORTED.error(f"this torch has no {dtype} tensors")
    assert isinstance(found, torch.dtype)  # noqa: S101 - narrows
    return found


def to_torch_cpu(ready: Ready, dtype: torch.dtype | None = None) -> torch.Tensor:
    import torch

    raw = read_bytes(ready)
    tensor = torch.from_numpy(raw).view(torch_dtype(ready.want.info.dtype))
    tensor = tensor.reshape(ready.want.shape)
    return tensor if dtype is None or dtype == tensor.dtype else tensor.to(dtype)


class Staging:
    """A ring of host buffers (pinned when the device is CUDA) through which tensor bytes
    are read (``preadv`` straight into the buffer) and copied to ``device``
    asynchronously; a buffer is reused once the copy out of it has completed."""

    def __init__(
        self, device: torch.device, buffers: int = STAGING_BUFFERS, size: int = STAGING_BYTES
    ) -> None:
        import torch

        self.device = device
        pinned = device.type == "cuda"
        self.buffers = [
            torch.empty(size, dtype=torch.uint8, pin_memory=pinned) for _ in range(buffers)
        ]
        self.views = [memoryview(b.numpy()) for b in self.buffers]
        self.size = size
        self._next = 0
        self._events: list[Any] = [None] * buffers
        self._stream = torch.cuda.Stream(device) if pinned else None

    def load(self, ready: Ready, dtype: torch.dtype | None = None) -> torch.Tensor:
        import torch

        want, fd = ready.want, ready.source.fd
        out = torch.empty(want.nbytes, dtype=torch.uint8, device=self.device)
        done = 0
        while done < want.nbytes:
            slot = self._next
            self._next = (slot + 1) % len(self.buffers)
            event = self._events[slot]
            if event is not None:
                event.synchronize()  # the copy out of this buffer has finished
            n = min(self.size, want.nbytes - done)
            got = 0
            while got < n:
                r = os.preadv(fd, [self.views[slot][got:n]], want.begin + done + got)
                if r <= 0:
                    raise ErrorCode.TENSORS_INVALID.error(
                        f"{ready.source.entry.path}: tensor {want.info.name!r} is cut short"
                    )
                got += r
            if self._stream is not None:
                with torch.cuda.stream(self._stream):
                    out[done : done + n].copy_(self.buffers[slot][:n], non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(self._stream)
                self._events[slot] = event
            else:
                out[done : done + n].copy_(self.buffers[slot][:n])
            done += n
        if self._stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
        tensor = out.view(torch_dtype(want.info.dtype)).reshape(want.shape)
        return tensor if dtype is None or dtype == tensor.dtype else tensor.to(dtype)

    def close(self) -> None:
        for event in self._events:
            if event is not None:
                event.synchronize()
        self.buffers.clear()
        self.views.clear()


class Materializer:
    """Turns ``Ready`` items into the arrays a load returns."""

    def __init__(self, framework: str, device: str | None, dtype: Any):
        if framework not in {"numpy", "torch"}:
            raise ErrorCode.SELECTION_INVALID.error(
                f"framework={framework!r}: give 'numpy' or 'torch'"
            )
        self.framework = framework
        self._staging: Staging | None = None
        self._dtype = dtype
        if framework == "numpy":
            if device not in {None, "cpu"}:
                raise ErrorCode.SELECTION_INVALID.error(
                    f"device={device!r} needs framework='torch'"
                )
            return
        try:
            import torch
        except ImportError:
            raise ErrorCode.TENSORS_UNSUPPORTED.error(
                "framework='torch' needs torch: pip install 'wreg[torch]'"
            ) from None
        try:
            self._device = torch.device(device or "cpu")
        except RuntimeError as exc:
            raise ErrorCode.SELECTION_INVALID.error(f"device={device!r}: {exc}") from None
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise ErrorCode.TENSORS_UNSUPPORTED.error(
                f"device={device!r}: this torch has no CUDA device (torch {torch.__version__})"
            )
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ErrorCode.SELECTION_INVALID.error(
                    f"dtype={self._dtype!r} is not a torch dtype"
                )
        self._dtype = dtype
        if self._device.type != "cpu":
            self._staging = Staging(self._device)

    def __call__(self, ready: Ready) -> Any:
        if self.framework == "numpy":
            return to_numpy(ready, self._dtype)
        if self._staging is not None:
            return self._staging.load(ready, self._dtype)
        return to_torch_cpu(ready, self._dtype)

    def close(self) -> None:
        if self._staging is not None:
            self._staging.close()
            self._staging = None


__all__ = ["ITEMSIZE", "Materializer", "Staging", "numpy_dtype", "read_bytes"]
