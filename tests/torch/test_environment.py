"""The torch environment can do what the loader needs: a CPU build of torch that views raw
little-endian bfloat16 bytes as a tensor and agrees with ml_dtypes bit for bit; and the main
environment (.venv) is still without torch, since the client must work without it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# Exact in bfloat16, then values that round (ties to even), extremes and the specials.
_VALUES = [0.0, -0.0, 1.0, -2.5, 3.140625, 65280.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1e-3]
_VALUES += [3.3895313892515355e38, 1e-40, float("inf"), float("-inf"), float("nan")]


def test_torch_is_the_cpu_build_and_reads_bfloat16_bytes() -> None:
    assert torch.__version__.startswith("2."), torch.__version__
    assert torch.version.cuda is None, f"expected the CPU build, got CUDA {torch.version.cuda}"

    rng = np.random.default_rng(20261202)
    floats = np.concatenate(
        [
            np.array(_VALUES, dtype=np.float32),
            rng.standard_normal(4096, dtype=np.float32) * np.float32(1e3),
        ]
    )
    reference = floats.astype(ml_dtypes.bfloat16)  # round to nearest even
    bits = reference.view(np.uint16)
    assert bits.dtype == np.uint16
    raw = bytearray(bits.astype("<u2").tobytes())  # writable: frombuffer warns otherwise

    # Bytes -> tensor, as the loader does: uint8 over the buffer (no copy), viewed as bf16.
    tensor = torch.frombuffer(raw, dtype=torch.uint8).view(torch.bfloat16)
    assert tensor.dtype == torch.bfloat16
    assert tensor.shape == (floats.size,)
    assert tensor.data_ptr() == torch.frombuffer(raw, dtype=torch.uint8).data_ptr()
    # Also straight from the bytes with dtype=bfloat16.
    direct = torch.frombuffer(raw, dtype=torch.bfloat16)
    assert torch.equal(direct.view(torch.int16), tensor.view(torch.int16))

    # The same bits back out of torch, and the same values as ml_dtypes gives.
    back = tensor.view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(back, bits)
    np.testing.assert_array_equal(tensor.float().numpy(), reference.astype(np.float32))

    # torch's float32 -> bfloat16 rounding agrees with ml_dtypes' (NaN payloads aside).
    finite = floats[~np.isnan(floats)]
    ours = torch.from_numpy(finite).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, finite.astype(ml_dtypes.bfloat16).view(np.uint16))
    assert torch.isnan(torch.from_numpy(floats).to(torch.bfloat16)).sum().item() == 1


def test_main_venv_has_no_torch() -> None:
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} does not exist (`make install` builds it)")
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    done = subprocess.run(  # noqa: S603 - the repository's own interpreter, a fixed snippet
        [str(python), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f".venv has torch; the client must work without it: {done}"
