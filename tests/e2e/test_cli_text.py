"""What ``wreg`` prints for people: ``--version``, help without markup or type
placeholders (and without loading the heavy modules), listings under a header row, and
``cache verify`` naming each corrupt blob by the model files that use it. Against a real
``wreg-server`` on 127.0.0.1 holding the real MiniLM model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.e2e.commands import wreg
from wreg import Client
from wreg.cli import app
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer

REPO = "cli-text/model"
SECOND = "cli-text/copy"

# Click/typer type placeholders (``<bool>``, ``<text>``, ``<a|b>`` choice lists), rich or
# markdown markup shown raw, typer's ``{ARG}`` for a required argument.
_PLACEHOLDER = re.compile(r"<(?:bool|boolean|text|integer|int|float|path|file|choice)>|<\w+\|")
_MARKUP = re.compile(r"`|\[/?(?:bold|b|i|italic|red|green|dim|code)\]|\*\*")
_BRACED = re.compile(r"\{[A-Z_]+\}")


@pytest.fixture(scope="module")
def pushed(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real model as ``REPO@v1`` and as ``SECOND@a`` (the same manifest); its digest."""
    client = Client(server.url, cache_dir=tmp_path_factory.mktemp("push-cache"))
    digest = client.push(base_model(), f"{REPO}@v1").manifest
    client.push(base_model(), f"{SECOND}@a")
    return digest


def _commands() -> Iterator[list[str]]:
    """The argument path of every command and group: ``[]``, ``["pull"]``, ``["cache",
    "ls"]``..."""
    root = typer.main.get_command(app)

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    return walk(root, [])


COMMANDS = list(_commands())


def test_there_are_commands_to_check() -> None:
    assert ["pull"] in COMMANDS
    assert ["cache", "verify"] in COMMANDS
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "wreg")
def test_help_is_clean(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="wreg")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"Usage: wreg {' '.join(path)}".rstrip() + " ")
    assert not _PLACEHOLDER.search(text), text
    assert not _MARKUP.search(text), text
    assert not _BRACED.search(text), text


def test_usage_lines_read_as_written() -> None:
    out = CliRunner().invoke(app, ["pull", "--help"], prog_name="wreg").output
    assert out.splitlines()[0] == "Usage: wreg pull [OPTIONS] REF"
    out = CliRunner().invoke(app, ["diff", "--help"], prog_name="wreg").output
    assert out.splitlines()[0] == "Usage: wreg diff [OPTIONS] A B"
    out = CliRunner().invoke(app, ["push", "--help"], prog_name="wreg").output
    assert out.splitlines()[0] == "Usage: wreg push [OPTIONS] DIR [REF]"
    assert "--version" in CliRunner().invoke(app, ["--help"]).output


def test_version(tmp_path: Path) -> None:
    out = wreg("--version", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"wreg {version('wreg')}\n"
    assert out.stderr == ""


def test_help_loads_no_heavy_module() -> None:
    """``wreg --help`` (and ``--version``) stay within the start-up target: neither loads
    the client, the network stack, rich, numpy or importlib.metadata for help."""
    heavy = [
        "wreg._client",
        "wreg._http",
        "wreg._cache",
        "httpx",
        "aiohttp",
        "asyncio",
        "rich",
        "numpy",
        "pydantic",
        "blake3",
        "importlib.metadata",
    ]
    code = (
        "import sys\n"
        "sys.argv = ['wreg', '--help']\n"
        "from wreg.cli import main\n"
        "try:\n    main()\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    out = subprocess.run(  # noqa: S603 - this interpreter, on the fixed script above
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "LOADED []" in out.stderr, out.stderr


def test_listings_have_a_header_row_and_json_does_not(
    pushed: str, client_env: dict[str, str]
) -> None:
    out = wreg("ls", env=client_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["repository", "updated", "tags"]
    row = next(line for line in lines[1:] if line.startswith(REPO + " "))
    assert row.split()[-1] == "v1"
    assert "repositories" in json.loads(wreg("ls", "--json", env=client_env).stdout)

    out = wreg("ls", REPO, env=client_env)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["tag", "manifest", "updated"]
    assert lines[1].split()[:2] == ["v1", pushed]
    # The columns line up under their headers.
    assert lines[1].index(pushed) == lines[0].index("manifest")
    assert json.loads(wreg("ls", REPO, "--json", env=client_env).stdout)["tags"][0]["tag"] == "v1"

    out = wreg("cache", "ls", env=client_env)
    assert out.stdout.splitlines()[0] == "(no cached models)"
    assert wreg("pull", f"{REPO}@v1", env=client_env).returncode == 0
    assert wreg("cache", "pin", f"{REPO}@v1", env=client_env).returncode == 0
    lines = wreg("cache", "ls", env=client_env).stdout.splitlines()
    assert lines[0].split() == ["repository", "tags", "manifest", "size", "last", "used", "state"]
    assert lines[1].split()[:3] == [REPO, "v1", pushed[7:19]]
    assert lines[1].endswith("pinned")
    assert lines[2].endswith("in partial downloads")
    listing = json.loads(wreg("cache", "ls", "--json", env=client_env).stdout)
    assert [s["repository"] for s in listing["snapshots"]] == [REPO]


def test_cache_verify_names_each_corrupt_blob_by_the_files_using_it(
    pushed: str, client_env: dict[str, str]
) -> None:
    """Two models share the weights blob; the config blob is only theirs too. Each
    ``corrupt`` line is followed by exactly the model files that hold that blob."""
    for ref in (f"{REPO}@v1", f"{SECOND}@a"):
        assert wreg("pull", ref, env=client_env).returncode == 0
    pulled = json.loads(wreg("pull", f"{REPO}@v1", "--json", env=client_env).stdout)
    snapshot = Path(pulled["path"])
    blobs = Path(client_env["WREG_CACHE"]) / "blobs"
    digests = {}
    for name in ("model.safetensors", "config.json"):
        blob = (snapshot / name).resolve()
        assert blob.parent == blobs, blob
        digests[name] = "blake3:" + blob.name
        with open(blob, "r+b") as f:
            f.write(b"\x00")

    out = wreg("cache", "verify", env=client_env)
    assert out.returncode == 1, out.stderr
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in out.stdout.splitlines():
        if line.startswith("corrupt "):
            current = line.removeprefix("corrupt ")
            blocks[current] = []
        elif line.startswith("  ") and current:
            blocks[current].append(line.strip())
        else:
            current = ""
    assert set(blocks) == set(digests.values()), out.stdout
    for name, digest in digests.items():
        assert sorted(blocks[digest]) == [
            f"{SECOND}@a: {name} ({digest})",
            f"{REPO}@v1: {name} ({digest})",
        ], out.stdout
    assert out.stdout.splitlines()[-1].endswith("problems found")
