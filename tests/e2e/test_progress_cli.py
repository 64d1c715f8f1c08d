"""The bars ``wreg push`` and ``wreg pull`` draw on a terminal (a pty, 120 columns): every
frame's ``done/total`` has done ≤ total, the totals are the model's size, and a pull's bar
shows a transfer rate and a time left. Rich draws only on a TTY, hence the pty."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.commands import BIN
from tests.e2e.proxy import proxy
from wreg.testing.realdata import base_model
from wreg.testing.servers import RunningServer

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
# rich's DownloadColumn: "12.3/91.6 MB" (both in the total's unit; commas in thousands).
_DONE_OF = re.compile(r"(\d[\d,]*(?:\.\d+)?)/(\d[\d,]*(?:\.\d+)?) (bytes|kB|MB|GB)")
_RATE = re.compile(r"\d+(?:\.\d+)? (?:kB|MB|GB)/s")
_TIME_LEFT = re.compile(r"\b\d+:\d\d:\d\d\b")


def in_pty(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run ``args`` with stdin, stdout and stderr on a 24x120 pty; its exit status and
    everything it wrote, escape sequences removed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments from the test
        args, stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def bars(output: str, phase: str) -> list[tuple[float, float, str]]:
    """(done, total, unit) of every frame of ``phase``'s bar in ``output``."""
    found = []
    for line in re.split(r"[\r\n]", output):
        if line.lstrip().startswith(phase) and (m := _DONE_OF.search(line)):
            done, total = (float(g.replace(",", "")) for g in m.group(1, 2))
            found.append((done, total, m.group(3)))
    return found


@pytest.fixture
def env(server: RunningServer, tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "WREG_URL": server.url,
        "WREG_CACHE": str(tmp_path / "cache"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "24",
    }


def test_push_and_pull_bars_never_show_more_done_than_their_total(
    server: RunningServer, env: dict[str, str], tmp_path: Path
) -> None:
    model = base_model()
    size_mb = sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) / 1e6
    code, out = in_pty([str(BIN / "wreg"), "push", str(model), "cli-bars/minilm@v1"], env)
    assert code == 0, out
    for phase in ("hashing", "uploading"):
        frames = bars(out, phase)
        assert frames, f"no {phase} bar drawn:\n{out}"
        assert all(done <= total for done, total, _unit in frames), frames
        assert {(total, unit) for _done, total, unit in frames} == {(round(size_mb, 1), "MB")}

    # The pull goes through a throttling proxy, so that it lasts long enough for rich to
    # estimate a rate (from two samples or more) on a fast machine too.
    with proxy(server.url) as p:
        p.delay = 0.02
        pull_env = env | {"WREG_URL": p.url}
        args = [str(BIN / "wreg"), "pull", "cli-bars/minilm@v1", "-o", str(tmp_path / "out")]
        code, out = in_pty(args, pull_env)
    assert code == 0, out
    frames = bars(out, "downloading")
    assert frames, out
    assert all(done <= total for done, total, _unit in frames), frames
    assert {total for _done, total, _unit in frames} == {round(size_mb, 1)}
    # Midway (not only once finished), the bar tells how fast and how long still.
    midway = [
        line
        for line in re.split(r"[\r\n]", out)
        if line.lstrip().startswith("downloading")
        and (m := _DONE_OF.search(line))
        and float(m.group(1).replace(",", "")) < float(m.group(2).replace(",", ""))
    ]
    assert any(_RATE.search(line) and _TIME_LEFT.search(line) for line in midway), midway
