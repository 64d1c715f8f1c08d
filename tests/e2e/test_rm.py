"""``wreg rm REF``: a tag, or a manifest and every tag pointing at it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.commands import one_line_error, wreg


def test_rm_tag_then_manifest(client_env: dict[str, str], tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(10_000))
    out = wreg("push", str(model), "rm/model@v1", "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    digest = json.loads(out.stdout)["manifest"]
    assert wreg("push", str(model), "rm/model@v2", env=client_env).returncode == 0

    out = wreg("rm", "rm/model@v1", "--json", env=client_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"reference": "rm/model@v1", "deleted": "tag"}
    tags = json.loads(wreg("ls", "rm/model", "--json", env=client_env).stdout)["tags"]
    assert [t["tag"] for t in tags] == ["v2"]
    one_line_error(wreg("rm", "rm/model@v1", env=client_env), "tag 'v1' is unknown")

    out = wreg("rm", f"rm/model@{digest}", env=client_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"deleted manifest rm/model@{digest}"
    tags = json.loads(wreg("ls", "rm/model", "--json", env=client_env).stdout)["tags"]
    assert tags == []  # v2 pointed at the same manifest
    one_line_error(wreg("pull", f"rm/model@{digest}", env=client_env), "not found")
    err = wreg("rm", f"rm/model@{digest}", env=client_env)
    one_line_error(err, "unknown")
    assert "(request " in err.stderr
    one_line_error(wreg("rm", "Bad/Name", env=client_env), "invalid repository name")
