"""Installing a Debian package for a test service (as root, with apt-get), in one place."""

from __future__ import annotations

import os
import shlex
import subprocess


class AptFailed(RuntimeError):
    """``apt-get update`` or ``install`` failed; the message ends with its output."""


def install(package: str, timeout_s: float) -> None:
    """``apt-get update`` then ``apt-get install -y --no-install-recommends PACKAGE``."""
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
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
