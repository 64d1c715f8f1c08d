"""A real ``wreg-server`` process on 127.0.0.1, for end-to-end tests and benchmarks.

    server = start_server(tmp / "data", {"WREG_DATABASE_URL": url})
    try:
        Client(server.url).push(...)
    finally:
        server.stop()

The server's output goes to a log file next to its data directory (its tail is in the
error when it does not start); it is up once ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wreg.testing.procs import LOCALHOST, free_port, stop_process, wait_for_http


def wreg_server_command() -> list[str]:
    """The ``wreg-server`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("wreg-server")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("wreg-server")
    return [found] if found else [sys.executable, "-m", "wreg_server.cli"]


@dataclass
class RunningServer:
    """A started ``wreg-server serve``: its base URL, data directory, process and log."""

    url: str
    data: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20) -> int:
        """Stop the server (``SIGTERM``, then ``SIGKILL``) and return its exit status."""
        return stop_process(self.process, timeout)


def start_server(
    data: Path,
    env: Mapping[str, str] | None = None,
    *,
    args: Sequence[str] = (),
    log: Path | None = None,
    timeout: float = 30,
) -> RunningServer:
    """Start ``wreg-server serve --data DATA`` on a free port and wait until it is up.

    ``env`` is added to this process's environment, ``args`` to the command line; output
    goes to ``log`` (default: ``server-<port>.log`` beside ``data``).
    """
    port = free_port()
    log = log or data.parent / f"server-{port}.log"
    command = [*wreg_server_command(), "serve", "--data", str(data)]
    with open(log, "ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(  # noqa: S603 - our own command; args from the caller
            [*command, "--host", LOCALHOST, "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | dict(env or {}),
        )
    url = f"http://{LOCALHOST}:{port}"
    try:
        wait_for_http(
            f"{url}/healthz",
            process,
            timeout=timeout,
            log=log,
            ready=lambda response: response.status_code == 200,
        )
    except BaseException:
        stop_process(process)
        raise
    return RunningServer(url, data, process, log)


def run_wreg_server(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``wreg-server ARGS...`` to the end (``env`` added to ours), output as text."""
    return subprocess.run(  # noqa: S603 - our own command, arguments from the caller's test
        [*wreg_server_command(), *args],
        env=os.environ | dict(env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def upgrade_database(data: Path, env: Mapping[str, str] | None = None) -> None:
    """Run ``wreg-server db upgrade`` (migrations to head) on the index ``env`` names."""
    done = run_wreg_server("db", "upgrade", "--data", str(data), env=env)
    if done.returncode != 0:
        raise RuntimeError(f"wreg-server db upgrade exited {done.returncode}: {done.stderr}")
