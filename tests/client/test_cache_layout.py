"""The node cache layout: one module names every path, and the names stay what they were."""

from __future__ import annotations

from pathlib import Path

from wreg._cache_layout import CacheLayout, is_hex, partial_hex, snapshot_lock_hex

H = "ab" * 32


def test_every_path_is_where_the_layout_docstring_draws_it(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    rel = {
        "blob": layout.blob(H),
        "part": layout.part(H),
        "progress": layout.progress(H),
        "manifest": layout.manifest(H),
        "ref": layout.ref("team/model", "v1"),
        "snapshot": layout.snapshot("team/model", H),
        "file_lock": layout.file_lock(H),
        "snapshot_lock": layout.snapshot_lock(H),
        "warm_lock": layout.warm_lock(),
        "prune_lock": layout.prune_lock(),
        "index": layout.index_db,
    }
    assert {k: str(v.relative_to(tmp_path)) for k, v in rel.items()} == {
        "blob": f"blobs/{H}",
        "part": f"tmp/{H}.part",
        "progress": f"tmp/{H}.progress",
        "manifest": f"manifests/{H}.json",
        "ref": "refs/team/model/v1",
        "snapshot": f"snapshots/team/model/{H}",
        "file_lock": f"locks/file-{H}.lock",
        "snapshot_lock": f"locks/snapshot-{H}.lock",
        "warm_lock": "locks/warm.lock",
        "prune_lock": "locks/prune.lock",
        "index": "index.sqlite",
    }


def test_names_parse_back() -> None:
    assert is_hex(H)
    assert not is_hex(H.upper())
    assert partial_hex(f"{H}.part") == H
    assert partial_hex(f"{H}.progress") == H
    assert partial_hex("notes.txt") is None
    assert snapshot_lock_hex(f"snapshot-{H}.lock") == H
    assert snapshot_lock_hex(f"file-{H}.lock") is None
