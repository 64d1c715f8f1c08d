"""The ``wreg`` and ``wreg-server`` commands as a user runs them, and their one-line errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

BIN = Path(sys.executable).parent


def run(
    exe: str,
    *args: str,
    env: Mapping[str, str],
    stdin: str | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``exe`` (a command of this environment: ``wreg``, ``wreg-server``) to the end."""
    return subprocess.run(  # noqa: S603 - a command of this venv, arguments from the test
        [str(BIN / exe), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec,
    )


def wreg(
    *args: str,
    env: Mapping[str, str],
    preexec: Callable[[], None] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``wreg ARGS...``, output captured as text."""
    return run("wreg", *args, env=env, preexec=preexec, timeout=timeout)


def spawn_wreg(*args: str, env: Mapping[str, str], capture: bool = True) -> subprocess.Popen[str]:
    """Start ``wreg ARGS...`` without waiting (to race it, or kill it midway); its output
    is piped (read it with ``communicate``) or, without ``capture``, dropped."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(  # noqa: S603 - a command of this venv, arguments from the test
        [str(BIN / "wreg"), *args], env=env, stdout=output, stderr=output, text=True
    )


def one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed (status 1, the CLI's for every error) and said why in one
    ``error: ...`` line on stderr, naming every needle, without a traceback."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
