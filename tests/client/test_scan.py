from __future__ import annotations

from pathlib import Path

import pytest

from wreg._push import default_reference, scan_tree
from wreg.core.errors import InvalidInput


def test_scan_lists_regular_files_sorted_with_modes(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "run").write_text("#!")
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    found = [(rel, mode) for _, rel, mode in scan_tree(tmp_path)]
    assert found == [("a.txt", 0o644), ("link.txt", 0o644), ("run", 0o755), ("b/z.txt", 0o644)]


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_scan_rejects_what_cannot_be_pushed(tmp_path: Path, kind: str) -> None:
    target = tmp_path / kind
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("x")
    with pytest.raises(InvalidInput):
        scan_tree(target)


def test_default_reference_is_dirname_at_latest(tmp_path: Path) -> None:
    (tmp_path / "my-model").mkdir()
    assert str(default_reference(tmp_path / "my-model")) == "my-model@latest"
    (tmp_path / "My Model").mkdir()
    with pytest.raises(InvalidInput, match="not a valid repository name"):
        default_reference(tmp_path / "My Model")
