"""Fault injectors for ``tests/e2e/test_faults_*.py``: an HTTP proxy that breaks chunk
transfers on purpose, a TCP switch that takes a backend off the network and back, and a
small file system that fills up.

``FaultProxy`` forwards everything to a real ``wreg-server``. Per chunk digest it can
answer a GET with a fault instead (``truncate``: full ``Content-Length``, half the body,
then close; ``reset``: TCP RST before any response; ``stall``: say nothing for
``stall_seconds``; ``flip``: the whole body with one byte changed), either for the next
attempts only (``transient``) or for every attempt (``permanent``). It records every
chunk GET attempt and every chunk PUT the server acknowledged, and can call ``on_put``
after each acknowledged PUT (to ``kill -9`` the server mid-push). Its faults are per
chunk request, so unless ``batches`` is set it answers the batched chunk routes 405, as
a registry without them does, and the client sends every chunk alone
(``tests/e2e/test_batched_transfer.py`` tests the batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.e2e.proxy import forward
from wreg.testing.webapps import chunk_digest, start_app


class _Thread:
    """An asyncio loop in a daemon thread that runs ``_serve`` until ``close``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self._serve(self._stop)

    async def _serve(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread and wait for it."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def start(self) -> _Thread:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _reset(request: web.Request) -> None:
    """Drop the client's connection with a TCP RST (SO_LINGER 0), not a clean FIN."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _batched_route(request: web.Request) -> bool:
    return request.method == "POST" and request.path.endswith(("/chunks/fetch", "/chunks/upload"))


def _no_such_method() -> web.Response:
    """What a registry from before the batched chunk routes answers them."""
    error = {"code": "METHOD_NOT_ALLOWED", "message": "method not allowed", "detail": None}
    return web.json_response({"errors": [error]}, status=405, headers={"Allow": "GET, HEAD, PUT"})


class FaultProxy(_Thread):
    FAULTS = ("truncate", "reset", "stall", "flip")

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self.transient: dict[str, list[str]] = {}  # digest -> faults for the next attempts
        self.permanent: dict[str, str] = {}  # digest -> fault for every attempt
        self.manifest_resets = 0  # reset this many manifest GETs (httpx control path)
        self.stall_seconds = 3.0
        self.gets: Counter[str] = Counter()  # chunk GET attempts per digest
        self.faulted: Counter[str] = Counter()  # faults injected per kind
        self.acked_puts: dict[str, int] = {}  # digest -> encoded bytes, PUTs answered 2xx
        self.on_put: Callable[[FaultProxy], None] | None = None
        self.batches = False  # forward POST .../chunks/fetch|upload (else: 405)

    async def _serve(self, stop: asyncio.Event) -> None:
        session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)

        async def handle(request: web.Request) -> web.StreamResponse:
            digest = chunk_digest(request.path) or ""
            chunk = bool(digest)
            fault = None
            if not self.batches and _batched_route(request):
                return _no_such_method()
            if chunk and request.method == "GET":
                self.gets[digest] += 1
                queued = self.transient.get(digest)
                fault = queued.pop(0) if queued else self.permanent.get(digest)
            elif request.method == "GET" and "/manifests/" in request.path and self.manifest_resets:
                self.manifest_resets -= 1
                fault = "reset"
            if fault is not None:
                self.faulted[fault] += 1
            if fault == "reset":
                _reset(request)
                raise ConnectionResetError("fault injected: reset")
            if fault == "stall":
                await asyncio.sleep(self.stall_seconds)
            try:
                status, payload, keep, body = await forward(session, self.upstream, request)
            except aiohttp.ClientError:  # the server is gone: so is its connection
                _reset(request)
                raise ConnectionResetError("upstream gone") from None
            if chunk and request.method == "PUT" and status < 300:
                self.acked_puts[digest] = len(body)
                if self.on_put is not None:
                    self.on_put(self)
            if fault == "flip" and status == 200 and payload:
                flipped = bytearray(payload)
                flipped[len(flipped) // 2] ^= 0x01
                payload = bytes(flipped)
            if fault == "truncate" and status == 200:
                response = web.StreamResponse(status=status, headers=keep)
                response.content_length = len(payload)
                await response.prepare(request)
                await response.write(payload[: len(payload) // 2])
                _reset(request)
                raise ConnectionResetError("fault injected: truncated body")
            return web.Response(status=status, body=payload, headers=keep)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner, port = await start_app(app, handle_signals=False)
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        await stop.wait()
        await session.close()
        await runner.cleanup()


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


class TcpSwitch(_Thread):
    """A TCP forwarder on a fixed 127.0.0.1 port that can be switched off and on.

    Off, the port is closed (connections are refused) and every forwarded connection is
    cut, as when a database or object store host goes away; on again, it listens on the
    same port, so clients configured with its address reconnect.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__()
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._listen()
        self._started.set()
        await stop.wait()
        self._off()

    def _off(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    def off(self) -> None:
        self.call(self._off)

    def on(self) -> None:
        done = threading.Event()

        async def listen() -> None:
            try:
                await self._listen()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(listen()))
        done.wait(10)


@contextlib.contextmanager
def tcp_switch(host: str, port: int) -> Iterator[TcpSwitch]:
    switch = TcpSwitch(host, port)
    switch.start()
    try:
        yield switch
    finally:
        switch.close()


# -- a small file system that fills up ------------------------------------------------


@dataclass
class SmallDisk:
    """A directory on a file system of ``size`` bytes; ``how`` says which mechanism."""

    path: Path
    how: str  # "tmpfs", "loop" or "rlimit"
    size: int

    def grow(self, size: int) -> None:
        """Make room (tmpfs: remount bigger; loop: not supported; rlimit: raise it)."""
        if self.how == "tmpfs":
            subprocess.run(  # noqa: S603 - remount of the test's own tmpfs
                ["mount", "-o", f"remount,size={size}", str(self.path)],  # noqa: S607 - util-linux
                check=True,
                timeout=30,
            )
        elif self.how == "loop":
            raise NotImplementedError("cannot grow a loop-mounted file system here")
        self.size = size

    def preexec(self) -> Callable[[], None] | None:
        """With ``rlimit``, what a subprocess must run first (RLIMIT_FSIZE, SIGXFSZ off)."""
        if self.how != "rlimit":
            return None
        size = self.size

        def limit() -> None:
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        return limit


def _mount(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603 - mount with the arguments small_disk builds
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


@contextlib.contextmanager
def small_disk(size: int) -> Iterator[SmallDisk]:
    """A full-able directory: a tmpfs mount if we may mount, else a loop-mounted ext4
    image, else (last resort) a plain directory whose writers get ``RLIMIT_FSIZE``.

    Mounting needs root (or CAP_SYS_ADMIN); in this sandbox tmpfs works.
    """
    root = Path(tempfile.mkdtemp(prefix="wreg-smalldisk-"))
    mnt = root / "mnt"
    mnt.mkdir()
    how = ""
    reasons = []
    if os.geteuid() == 0 and shutil.which("mount"):
        error = _mount(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)])
        if not error:
            how = "tmpfs"
        else:
            reasons.append(f"tmpfs: {error}")
            image = root / "disk.img"
            with open(image, "wb") as f:
                f.truncate(size)
            if shutil.which("mkfs.ext4"):
                mkfs = subprocess.run(  # noqa: S603 - mkfs on the test's own image file
                    ["mkfs.ext4", "-q", "-F", str(image)],  # noqa: S607 - from PATH (e2fsprogs)
                    capture_output=True,
                    timeout=60,
                )
                error = mkfs.stderr.decode(errors="replace") if mkfs.returncode else ""
                error = error or _mount(["mount", "-o", "loop", str(image), str(mnt)])
                if not error:
                    how = "loop"
                else:
                    reasons.append(f"loop: {error}")
    else:
        reasons.append("not root: cannot mount")
    if not how:
        how = "rlimit"  # RLIMIT_FSIZE: EFBIG, not ENOSPC, but a write that fails all the same
    try:
        yield SmallDisk(mnt, how, size)
    finally:
        if how in ("tmpfs", "loop"):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)  # noqa: S603,S607 - umount from PATH, of the test's own mount
        shutil.rmtree(root, ignore_errors=True)
