"""Debian's chromium for the browser tests (Playwright drives it; no Playwright download).

``ensure()`` returns the browser's path, installing the ``chromium`` package with apt-get
when it is missing and we are root (CI); elsewhere a missing browser is
``ChromiumUnavailable``, which the tests turn into a failure on CI and a skip otherwise
(like PostgreSQL, ``tests/services/postgres.py``). ``LAUNCH_ARGS``: CI runs as root,
where chromium's sandbox cannot start, so it runs with ``--no-sandbox`` (the pages it
opens are our own, served from 127.0.0.1).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

from filelock import FileLock

from tests.services import apt

CHROMIUM: Final = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_S: Final = 600
LAUNCH_ARGS: Final = ("--no-sandbox", "--disable-dev-shm-usage")


class ChromiumUnavailable(RuntimeError):
    """chromium is not installed and could not be installed here."""


def ensure() -> Path:
    """The chromium executable, installed (apt) when missing and we are root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise ChromiumUnavailable(
            f"{CHROMIUM} is missing and the tests are not running as root; "
            "run `sudo apt-get install -y chromium` once"
        )
    with FileLock(Path(tempfile.gettempdir()) / "wreg-chromium-install.lock"):
        if not CHROMIUM.exists():
            try:
                apt.install("chromium", INSTALL_TIMEOUT_S)
            except apt.AptFailed as exc:
                raise ChromiumUnavailable(str(exc)) from None
    if not CHROMIUM.exists():
        raise ChromiumUnavailable(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM
