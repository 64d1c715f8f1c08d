"""README.md's commands run as written.

What a block's fence says is what it is (README authors, keep to it):

- ```` ```sh ```` / ```` ```bash ````: commands that run as written. In the executed
  sections (``EXECUTED``: "Quickstart" and "HTTP API") the test runs every one, and every
  ```` ```python ```` block there too; anywhere else a shell block must be on ``EXCLUDED``
  with the reason it is not run.
- ```` ```console ````: a transcript (``$`` prompts and output) on a model you may not
  have; bare ```` ``` ````, ```` ```text ````, ```` ```json ````, ```` ```nginx ````:
  syntax summaries, layouts, configuration: illustrative, never run. The executed
  sections hold no illustrative block but ```` ```text ```` output a command above
  prints (``make run``'s screen).

How they run: in README order, in one ``bash`` (``set -euo pipefail``), as a reader's
terminal would, so what one block exports the next one sees; a python block is fed to
``.venv/bin/python``. The working directory is a scratch directory whose ``.venv`` is this
environment (the README says "from the repository root"; the blocks write only
``./wreg-data``, ``./model-copy`` and a few files, which must not land in the checkout).
The environment is this one without any ``WREG_*`` variable (a developer's ``WREG_URL``
or token must not leak in), without this environment's ``bin`` on ``PATH`` (a bare
``wreg`` would not run for a reader who did not activate the venv) and with a fresh
``HOME`` (no stored token, an empty node cache), i.e. a newcomer's: what the README tells
them to set, they set in a block. One substitution: port 8080 becomes a free port, so the
test never talks to a server someone left running. The server the Quickstart starts in
the background is stopped with the shell's process group at the end.

Long-running or environment-changing blocks are on ``EXCLUDED``, each with its reason:
``make run`` / ``make test`` (minutes; the "By hand" blocks do what ``make run`` does),
the venv install, the UI test commands, ``docker compose``.

A failing block fails the test naming its README line (each block echoes a marker first).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from wreg.testing.procs import free_port
from wreg.testing.realdata import RealDataUnavailable, base_model, variant

README: Final = Path(__file__).resolve().parents[2] / "README.md"
SHELL: Final = frozenset({"sh", "bash"})
EXECUTED: Final = ("Quickstart", "HTTP API")
# A distinctive piece of each shell block not run, and why. Each must match one block.
EXCLUDED: Final = {
    "make run ": "the whole demo, minutes long; the blocks after it do the same by hand",
    "python3 -m venv .venv": "installs into .venv: the test runs in that environment",
    "tests/server/test_ui.py": "runs part of the suite; make test runs those tests",
    "docker compose up": "needs a Docker engine; tests/deploy/test_compose.py checks it",
}
# Only these comments: `make docs` rewrites what lies between them.
ALLOWED_COMMENTS: Final = ("<!-- error-codes:begin -->", "<!-- error-codes:end -->")
_FENCE: Final = re.compile(r"^(\s*)```(\S*)\s*$")
_PORT: Final = re.compile(r"(?<=--port )8080\b|(?<=127\.0\.0\.1:)8080\b")
TIMEOUT_S: Final = 300


@dataclass(frozen=True)
class Block:
    """A fenced block of README.md: the ``## `` section it is in, its language, the line
    its fence opens on, and its text."""

    section: str
    lang: str
    line: int
    text: str

    def excluded(self) -> str | None:
        """The reason this block is not run, if it is on ``EXCLUDED``."""
        return next((why for key, why in EXCLUDED.items() if key in self.text), None)


def blocks(markdown: str) -> list[Block]:
    """Every fenced block, with the level-2 section it falls under."""
    out: list[Block] = []
    section = ""
    fence: tuple[str, str, int] | None = None  # indent, language, line
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, body = (match[1], match[2], number), []
            elif line.startswith("## "):
                section = line[3:].strip()
        elif match and match[2] == "" and match[1] == fence[0]:
            indent, lang, start = fence
            text = "\n".join(b[len(indent) :] if b.startswith(indent) else b for b in body)
            out.append(Block(section, lang, start, text + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the block opened on line {fence[2]} never closes"
    return out


def to_run(all_blocks: list[Block]) -> list[Block]:
    return [
        b
        for b in all_blocks
        if b.section in EXECUTED and b.lang in SHELL | {"python"} and b.excluded() is None
    ]


def script(run: list[Block], port: int) -> str:
    """One bash script: each block after a marker naming its line, python via a here-doc."""
    parts = ["set -euo pipefail"]
    for b in run:
        text = _PORT.sub(str(port), b.text)
        parts.append(f"echo '### README.md:{b.line}' >&2")
        if b.lang == "python":
            assert "README_PY" not in text
            parts.append(f".venv/bin/python - <<'README_PY'\n{text}README_PY")
        else:
            parts.append(text)
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def readme_blocks() -> list[Block]:
    return blocks(README.read_text(encoding="utf-8"))


def test_executed_sections_hold_only_blocks_that_run(readme_blocks: list[Block]) -> None:
    found = {b.section for b in readme_blocks}
    assert set(EXECUTED) <= found, f"README sections renamed? found {sorted(found)}"
    for b in readme_blocks:
        if b.section in EXECUTED:
            assert b.lang in SHELL | {"python", "text"}, (
                f"README.md:{b.line} ({b.section}): ```{b.lang} is illustrative; every block "
                "of this section must run (```sh, ```bash or ```python) or be the output "
                "of one (```text)"
            )
    assert len(to_run(readme_blocks)) >= 8


def test_every_shell_block_runs_or_says_why_not(readme_blocks: list[Block]) -> None:
    for b in readme_blocks:
        if b.lang in SHELL and b.section not in EXECUTED:
            assert b.excluded(), (
                f"README.md:{b.line} ({b.section}) is a shell block the test does not run: "
                "move it under an executed section, mark it illustrative (```text), or add "
                "it to EXCLUDED with the reason"
            )
    for key in EXCLUDED:
        matching = [b.line for b in readme_blocks if b.lang in SHELL and key in b.text]
        assert len(matching) == 1, f"EXCLUDED key {key!r} matches blocks on lines {matching}"


def test_no_leftover_html_comments() -> None:
    text = README.read_text(encoding="utf-8")
    comments = re.findall(r"<!--.*?-->", text, flags=re.DOTALL)
    assert [c for c in comments if c not in ALLOWED_COMMENTS] == []
    assert "(docs/WIRE-FORMAT.md)" in text
    assert (README.parent / "docs" / "WIRE-FORMAT.md").is_file()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the shell's process group (the server the Quickstart put in the background)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            os.killpg(process.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_readme_blocks_run_as_written(readme_blocks: list[Block], tmp_path: Path) -> None:
    try:  # fetched (once) before the clock of the blocks starts
        base_model(), variant("finetune")
    except RealDataUnavailable as exc:
        pytest.skip(f"real model unavailable: {exc}")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    home = tmp_path / "home"
    home.mkdir()
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WREG_", "XDG_"))}
    env.pop("VIRTUAL_ENV", None)  # not activated: the blocks say .venv/bin/... themselves
    paths = os.environ.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in paths if Path(p).resolve() != venv.resolve() / "bin")
    env["HOME"] = str(home)
    if "WREG_TESTDATA" in os.environ:  # where the test model lives, not a reader setting
        env["WREG_TESTDATA"] = os.environ["WREG_TESTDATA"]
    run = to_run(readme_blocks)
    (work / "readme.sh").write_text(script(run, free_port()))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # Files, not pipes: the background server keeps its descriptors after bash exits.
        shell = subprocess.Popen(
            ["/bin/bash", "readme.sh"],
            cwd=work,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        status = shell.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        _stop_group(shell)
    errors = err.read_text(errors="replace")
    markers = re.findall(r"^### README\.md:(\d+)$", errors, flags=re.MULTILINE)
    last = next((b for b in run if markers and b.line == int(markers[-1])), None)
    where = f"README.md:{last.line} ({last.section}):\n{last.text}" if last else "before any block"
    assert status == 0, (
        f"{'timed out' if status is None else f'exit {status}'} in {where}\n"
        f"stderr:\n{errors[-4000:]}\nstdout:\n{out.read_text(errors='replace')[-2000:]}"
    )
    assert [int(m) for m in markers] == [b.line for b in run]
    stdout_text = out.read_text()
    assert "identical" in stdout_text  # the pulled copy is the pushed model
    assert "TAG_CONFLICT" not in errors
    assert re.search(r"^true$", stdout_text, flags=re.MULTILINE)  # the losing CAS got its 412
