"""Hashing reports its bytes as it goes (``wreg._push._hash_file``): in steps of at
least ``_REPORT_BYTES`` (the last step of a file takes the rest), adding up to the file's
size, from disk and from memory alike. The whole push and pull, against a real server,
is in ``tests/e2e/test_progress.py``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wreg import _push, _push_tensors
from wreg.core.manifest import MODE_FILE


def hashed_steps(f: _push._File) -> list[int]:
    steps: list[int] = []
    _push._hash_file(f, 64 << 20, steps.append)
    return steps


def assert_steps(steps: list[int], size: int) -> None:
    assert sum(steps) == size
    assert all(step >= _push._REPORT_BYTES for step in steps[:-1]), steps
    assert len(steps) >= size // (2 * _push._REPORT_BYTES), steps  # not once per file


def test_a_large_file_on_disk_is_reported_in_steps_as_it_is_hashed(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    size = 5 * _push._REPORT_BYTES + 12345  # content-defined chunks of ~1 MiB
    path.write_bytes(os.urandom(size))
    f = _push._File(path, "weights.bin", MODE_FILE, size, path.stat())
    steps = hashed_steps(f)
    assert_steps(steps, size)
    assert f.chunks is not None
    assert len(steps) < len(f.chunks)  # in steps, not a call per chunk


def test_a_checkpoint_in_memory_is_reported_in_steps_too() -> None:
    rng = np.random.default_rng(3)
    tensors = {f"layer.{i}": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(6)}
    ((name, content),) = _push_tensors.prepare(tensors)
    f = _push._File(Path(name), name, MODE_FILE, content.size, content=content)
    assert_steps(hashed_steps(f), content.size)


def test_a_file_smaller_than_a_step_is_reported_once_and_an_empty_one_never(
    tmp_path: Path,
) -> None:
    small, empty = tmp_path / "config.json", tmp_path / "empty"
    small.write_bytes(b"{}" * 100)
    empty.write_bytes(b"")
    assert hashed_steps(_push._File(small, "config.json", MODE_FILE, 200, small.stat())) == [200]
    assert hashed_steps(_push._File(empty, "empty", MODE_FILE, 0, empty.stat())) == []
