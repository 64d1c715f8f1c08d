"""Local processes for tests and benchmarks: a free port, a wait until up, a stop that reaps.

The one copy of each, used by ``tests/`` and ``bench/`` alike::

    port = free_port()
    process = subprocess.Popen([..., "--port", str(port)])
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        ...
    finally:
        stop_process(process)

``free_port`` asks the kernel for a port that is free *now*; another process can take it
before ours binds it, so a caller that cannot afford that retries on a failed start
(``tests/services/moto.py`` and ``postgres.py`` do).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on at the moment of the call."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(
    process: subprocess.Popen[Any], timeout: float = 20, sig: int = signal.SIGTERM
) -> int:
    """Stop ``process`` and reap it; returns its exit status.

    Sends ``sig`` (``SIGTERM``: the servers here shut down cleanly on it), waits up to
    ``timeout`` seconds, then ``SIGKILL``s it. A process that already exited is only
    reaped. Never leaves a zombie or a running child behind, whatever happened before.
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def wait_for_http(
    url: str,
    process: subprocess.Popen[Any] | None = None,
    *,
    timeout: float = 30,
    log: Path | None = None,
    ready: Callable[[httpx.Response], bool] = lambda response: True,
) -> httpx.Response:
    """Poll ``url`` with GET until it answers and ``ready(response)`` holds.

    Raises ``RuntimeError`` (with the tail of ``log``, if given) when ``process`` exits
    first or ``timeout`` seconds pass; the process is left to the caller to stop.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited {process.returncode}{_tail(log)}")
        try:
            response = httpx.get(url, timeout=1)
            if ready(response):
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up within {timeout:g} s{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return ":\n" + log.read_text(errors="replace")[-4000:]
