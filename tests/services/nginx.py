"""A throwaway nginx for the tests: found or installed, started on our config, stopped.

``start(root, http)`` finds ``nginx`` (on ``PATH`` or ``/usr/sbin``), installing Debian's
``nginx-light`` with apt-get when it is missing and we are root (as ``postgres.py`` does
PostgreSQL), and runs it in the foreground on a main config of its own under ``root``:
``http`` is what goes inside its ``http {}`` block (``server``, ``upstream``,
``proxy_cache_path``, …), with every temp path, the pid file and the logs under ``root``,
so it never touches a system nginx. ``Nginx.stop()`` shuts it down gracefully.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from tests.services import apt
from wreg.testing.procs import stop_process, wait_for_http

INSTALL_TIMEOUT_S = 600
PACKAGE = "nginx-light"


_MAIN = """{user}worker_processes 1;
daemon off;
error_log {root}/error.log info;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format wreg_test '$status $upstream_cache_status $request_method $request_uri';
    access_log {root}/access.log wreg_test;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
{http}
}}
"""


class NginxUnavailable(RuntimeError):
    """nginx is not installed and could not be installed here."""


@dataclass
class Nginx:
    """A running nginx: its process and directory (``error.log``, ``access.log``: one
    ``STATUS CACHE-STATUS METHOD URI`` line per request, ``-`` where nothing was cached)."""

    process: subprocess.Popen[bytes]
    root: Path

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[list[str]]:
        path = self.root / "access.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return [line.split(" ") for line in lines]

    def stop(self) -> int:
        """Graceful shutdown (``SIGQUIT``), then ``SIGKILL`` after 10 s."""
        return stop_process(self.process, 10, signal.SIGQUIT)


def find() -> str | None:
    """The ``nginx`` binary, if installed (Debian puts it in ``/usr/sbin``)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return found


def install() -> str:
    """Install Debian's ``nginx-light`` (root + apt-get) and return the binary."""
    if shutil.which("apt-get") is None:
        raise NginxUnavailable("nginx is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise NginxUnavailable(
            f"nginx is not installed and the tests are not running as root; "
            f"run `sudo apt-get install -y {PACKAGE}` once"
        )
    with FileLock(Path(tempfile.gettempdir()) / "wreg-nginx-install.lock"):
        found = find()
        if found is not None:
            return found
        try:
            apt.install(PACKAGE, INSTALL_TIMEOUT_S)
        except apt.AptFailed as exc:
            raise NginxUnavailable(str(exc)) from None
    found = find()
    if found is None:
        raise NginxUnavailable(f"apt-get installed {PACKAGE} but there is no nginx binary")
    return found


def start(root: Path, http: str, url: str, *, timeout: float = 15) -> Nginx:
    """Run nginx with ``http`` inside its ``http {}`` block until ``url`` answers.

    ``url`` is any URL the config serves (any status will do: it only shows nginx is up).
    """
    binary = find() or install()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    # As root, workers would run as nobody, who cannot write the cache under root's tmp.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(_MAIN.format(user=user, root=root, http=http), encoding="utf-8")
    check = subprocess.run(  # noqa: S603 - nginx on our own config
        [binary, "-t", "-q", "-c", str(conf), "-p", str(root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused its config:\n{check.stderr}\n{conf.read_text()}")
    with open(root / "stderr.log", "ab") as out:
        process = subprocess.Popen(  # noqa: S603 - nginx on our own config
            [binary, "-c", str(conf), "-p", str(root)], stdout=out, stderr=subprocess.STDOUT
        )
    server = Nginx(process, root)
    try:
        wait_for_http(url, process, timeout=timeout, log=root / "error.log")
    except BaseException:
        server.stop()
        raise
    return server
