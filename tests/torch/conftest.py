"""The torch suite needs torch, which only ``.venv-torch`` has (``.venv`` stays without it).

Without torch every module here is skipped, unimported, with the reason; with
``WREG_REQUIRE_TORCH=1`` (``make test``, ``make test-torch``) the session stops with a
usage error instead, so that CI cannot pass by skipping the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TORCH_MISSING: str | None = None
try:
    import torch
except ImportError as exc:
    TORCH_MISSING = f"torch is not importable here ({exc}); `make test-torch` runs this suite"
else:
    if Path(torch.__file__).resolve().parent == Path(__file__).resolve().parent:
        # pytest run from inside tests/: the working directory is on sys.path first.
        TORCH_MISSING = "`import torch` found tests/torch itself: run pytest from the repo root"


def _required() -> bool:
    return os.environ.get("WREG_REQUIRE_TORCH") == "1"


def pytest_configure(config: pytest.Config) -> None:
    # Called when this conftest is registered: at start-up when tests/torch is named on the
    # command line, during collection otherwise. A UsageError ends the session either way.
    if TORCH_MISSING is not None and _required():
        raise pytest.UsageError(f"WREG_REQUIRE_TORCH=1 but {TORCH_MISSING}")


class _TorchMissing(pytest.Module):
    """A test module that is not imported (its ``import torch`` would fail): one skip."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        assert TORCH_MISSING is not None
        pytest.skip(TORCH_MISSING)


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Module | None:
    if TORCH_MISSING is None:
        return None
    return _TorchMissing.from_parent(parent, path=module_path)
