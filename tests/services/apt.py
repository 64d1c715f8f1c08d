"""Installing a Debian package for a test service (as root, with apt-get), in one place."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from filelock import FileLock

# One apt-get at a time across the test processes (pytest-xdist workers start services
# side by side; a second apt-get would fail on dpkg's lock rather than wait for it).
_LOCK = Path(tempfile.gettempdir()) / "wreg-apt.lock"


class AptFailed(RuntimeError):
    """``apt-get update`` or ``install`` failed; the message ends with its output."""


def install(package: str, timeout_s: float) -> None:
    """``apt-get update`` then ``apt-get install -y --no-install-recommends PACKAGE``,
    one process at a time (a package another worker just installed is a quick no-op)."""
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    with FileLock(_LOCK, timeout=timeout_s * 2):
        _install(package, timeout_s, env)


def _install(package: str, timeout_s: float, env: dict[str, str]) -> None:
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", package],
    ):
        done = subprocess.run(  # noqa: S603 - apt-get with fixed arguments, as root
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-2000:]
            raise AptFailed(f"`{shlex.join(command)}` failed:\n{tail}")
