"""Protection against slow and greedy clients, for what ``wreg-server serve`` runs.

uvicorn has no deadline for request headers (a connection may spend forever sending
them, or send nothing at all), its keep-alive timer stops at a request's first byte, and
its ``limit_concurrency`` counts every open socket, so a few hundred sockets that never
finish a request make it answer 503 to everyone. ``GuardedProtocol`` is uvicorn's
httptools protocol (the one ``uvicorn[standard]`` runs) with four changes, passed as
``uvicorn.run(http=protocol_for(guard))``:

* **Header deadline** (``WREG_HEADER_TIMEOUT``): a timer started when a connection is
  accepted, and again when each response ends, closes the connection unless a request's
  headers are complete by then (after a 408 if part of a request came). A deadline, not
  an idle timeout: trickling a byte a second does not extend it.
* **Connections per client** (``WREG_MAX_CLIENT_CONNECTIONS``): open connections are
  counted per peer address (an IPv6 peer per /64: one host usually holds a whole /64);
  one past the cap is closed as soon as it is accepted, before anything is read.
* **Busy, not open**: the 503 threshold (``WREG_MAX_CONNECTIONS``) counts requests in
  progress, not sockets, so idle and half-sent connections (bounded by the two limits
  above) cannot push honest requests over it.
* **Open sockets**: past ``open_connection_limit()`` (the descriptor limit less a
  reserve) new connections are closed at once, so sockets cannot take the descriptors
  that requests in progress need for the index and the object store.

Behind a reverse proxy every connection comes from the proxy, so peers in
``WREG_TRUSTED_PROXIES`` are not capped per connection (the proxy carries everyone).
``ForwardedClientLimit``, an ASGI middleware, caps *requests in progress* per client
named by their ``X-Forwarded-For`` instead: the rightmost entry that is not itself a
trusted proxy (entries left of it were written by the client and prove nothing). A
connection's client is only known once its headers are parsed, so the header deadline
and connection cap of clients behind a proxy are the proxy's to enforce; the body
deadlines (``api/body.py``) apply to everyone.

A refused connection costs an accept and a close. Refusals and timeouts are added up in
one warning at most every ``WARN_EVERY`` seconds, so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import resource
import select
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from wreg.core.errors import ErrorCode
from wreg_server.api.errors import error_body, error_response
from wreg_server.settings import IPNetwork, ServerSettings

log = logging.getLogger(__name__)

WARN_EVERY: Final = 10.0
ZEROCOPY: Final = "http.response.zerocopysend"
# Seconds a sendfile thread waits for a full socket buffer to drain before it hands the
# wait to the event loop: one thread hop per chunk for clients that keep up, and no
# thread held by one that does not.
PATIENCE: Final = 0.2
# Request body bytes a connection buffers before reading pauses (uvicorn's: 64 KiB).
BODY_HIGH_WATER: Final = 1 << 20
FD_RESERVE: Final = 256  # descriptors kept for the index, the object store, files, logs


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(host: str) -> str:
    """Whose count a connection from ``host`` goes to: an IPv4 address, an IPv6 /64, or
    ``host`` itself when it is no address (a Unix socket, an odd forwarded entry)."""
    address = _address(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _without_port(hop: str) -> str:
    """``1.2.3.4:80`` → ``1.2.3.4``, ``[::1]:80`` → ``::1`` (some proxies add the port)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def forwarded_client(values: Iterable[bytes], trusted: tuple[IPNetwork, ...]) -> str | None:
    """The client that ``X-Forwarded-For`` ``values`` name, as trusted proxies append to it.

    The rightmost entry that is not a trusted proxy (the leftmost if all are); None when
    the header names nobody.
    """
    hops = [
        _without_port(hop.strip())
        for value in values
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else None


def _in(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    address = _address(host)
    return address is not None and any(address in network for network in networks)


def open_connection_limit(reserve: int = FD_RESERVE) -> int:
    """How many sockets may be open before new connections are closed at once.

    The descriptor limit (the soft one raised to the hard one first, up to 65536, as
    servers do) less ``reserve``: past it, accepting would leave requests in progress
    unable to open an object, a database connection or a temporary file (``EMFILE``).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft == resource.RLIM_INFINITY:
        soft = target
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(64, soft - reserve)


@dataclass
class ConnectionGuard:
    """The limits of one server process and its live counts, shared by its connections."""

    header_timeout: float
    max_per_client: int
    max_open: int
    # Seconds a zero-copy response may make no progress before its connection is closed.
    send_timeout: float = 60.0
    trusted: tuple[IPNetwork, ...] = ()
    connections: Counter[str] = field(default_factory=Counter)  # open, per client key
    requests: Counter[str] = field(default_factory=Counter)  # in progress, per forwarded client
    _events: Counter[str] = field(default_factory=Counter)
    _reported: float = float("-inf")

    @classmethod
    def from_settings(cls, settings: ServerSettings, max_open: int) -> ConnectionGuard:
        return cls(
            header_timeout=settings.header_timeout,
            max_per_client=settings.max_client_connections,
            max_open=max_open,
            trusted=settings.trusted_proxy_networks,
            send_timeout=settings.body_timeout,
        )

    def is_trusted(self, host: str) -> bool:
        return _in(host, self.trusted)

    def take(self, counts: Counter[str], key: str) -> bool:
        """Count one more for ``key``, unless that would pass ``max_per_client``."""
        if counts[key] >= self.max_per_client:
            return False
        counts[key] += 1
        return True

    def give_back(self, counts: Counter[str], key: str) -> None:
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]  # so the table holds live clients only

    def note(self, event: str) -> None:
        """Count a refusal or timeout; report the counts at most every ``WARN_EVERY`` s."""
        self._events[event] += 1
        now = time.monotonic()
        if now - self._reported >= WARN_EVERY:
            summary = "; ".join(f"{n} {what}" for what, n in self._events.items())
            log.warning("slow or greedy clients since the last report: %s", summary)
            self._events.clear()
            self._reported = now

    def timeout_response(self) -> bytes:
        message = f"request headers not complete within {self.header_timeout:g} s"
        detail = {"timeout_s": self.header_timeout}
        body = json.dumps(error_body(ErrorCode.REQUEST_TIMEOUT.name, message, detail)).encode()
        return (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer past ``WREG_MAX_CONNECTIONS`` requests in progress (uvicorn's, in our shape)."""
    response = error_response(
        ErrorCode.UNAVAILABLE,
        "the server has as many requests in progress as it takes; try again shortly",
    )
    response.headers["Retry-After"] = "1"
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadline and limits in the module docstring."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's check (in on_headers_complete) counts open sockets; ours counts requests.
        self.max_busy = self.limit_concurrency
        self.limit_concurrency = None
        self._client_key: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        host = self.client[0] if self.client else None
        if len(self.connections) > guard.max_open:
            guard.note("connections closed: too many open")
            transport.close()
            return
        if host is not None and not guard.is_trusted(host):
            key = client_key(host)
            if not guard.take(guard.connections, key):
                guard.note("connections closed: the client had WREG_MAX_CLIENT_CONNECTIONS")
                transport.close()
                return
            self._client_key = key
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._client_key is not None:
            self.guard.give_back(self.guard.connections, self._client_key)
            self._client_key = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._request_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._request_begun = False
        before = self.cycle
        if self.max_busy is None or len(self.tasks) < self.max_busy:
            super().on_headers_complete()
        else:
            self.guard.note("requests answered 503: WREG_MAX_CONNECTIONS in progress")
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()  # queues or starts the request with self.app
            finally:
                self.app = app
        if self.cycle is not before and self._plain_tcp():
            _offer_zerocopy(self.cycle, self.guard.send_timeout)

    def on_body(self, body: bytes) -> None:
        # uvicorn's, with a larger high-water mark: it pauses reading (and the receiving
        # request resumes it) every 64 KiB, a round trip through the event loop, two
        # epoll changes and a copy per 64 KiB of every upload. Request bodies are capped
        # by the routes (api/body.py), so a connection buffers at most BODY_HIGH_WATER.
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def _plain_tcp(self) -> bool:
        """Whether the connection is a plain TCP socket (not TLS), so ``sendfile`` works."""
        transport = self.transport
        return (
            transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
        )

    def on_response_complete(self) -> None:
        next_is_new = not self.pipeline  # else the next request's headers are already in
        super().on_response_complete()
        if next_is_new and not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.guard.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.guard.note("connections closed: request headers not complete in time")
        if self._request_begun:
            self.transport.write(self.guard.timeout_response())
        self.transport.close()


def _offer_zerocopy(cycle: RequestResponseCycle, timeout: float) -> None:
    """Give ``cycle`` the ASGI ``http.response.zerocopysend`` extension (``sendfile``).

    uvicorn does not implement it; the chunk download hot path (``api/hotpath.py``) uses
    it to send a file from the page cache to the socket without copying it through
    Python. The response's headers are written by uvicorn as usual (they must declare a
    ``Content-Length`` covering the file); then, once the transport's buffer has drained,
    the file goes out with ``os.sendfile`` on a duplicate of the socket's descriptor in a
    worker thread (the file may not be cached: disk reads stay off the event loop; the
    duplicate keeps the socket, not some reused descriptor number, the target if the
    connection closes meanwhile), and the cycle's own bookkeeping ends the response. A
    client that hangs up ends it as a disconnect; one that takes nothing for ``timeout``
    seconds has its connection closed.
    """
    cycle.scope.setdefault("extensions", {})[ZEROCOPY] = {}
    plain = cycle.send

    async def send(message: Any) -> None:
        if message["type"] != ZEROCOPY:
            await plain(message)
            return
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"{ZEROCOPY} outside a started response")
        if cycle.disconnected:
            return
        file = message["file"]
        offset = int(message.get("offset") or 0)
        count = message.get("count")
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        if cycle.chunked_encoding or count > cycle.expected_content_length:
            raise RuntimeError(f"{ZEROCOPY} needs a Content-Length that covers the file")
        transport = cycle.transport
        waited = 0.0
        while transport.get_write_buffer_size():  # the headers, almost always written at once
            if cycle.disconnected or waited > timeout:
                transport.close()
                return
            await asyncio.sleep(0.001)
            waited += 0.001
        sock = os.dup(transport.get_extra_info("socket").fileno())
        try:
            await _send_file(sock, file.fileno(), offset, count, timeout)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            cycle.disconnected = True
            transport.close()
            return
        finally:
            os.close(sock)
        cycle.expected_content_length -= count
        more = bool(message.get("more_body", False))
        await plain({"type": "http.response.body", "body": b"", "more_body": more})

    setattr(cycle, "send", send)  # noqa: B010 - an instance attribute over the method


async def _send_file(sock: int, fd: int, offset: int, count: int, stall: float) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` to the non-blocking socket ``sock``:
    ``sendfile`` in a worker thread while the socket takes bytes, and a wait for it to
    become writable on the event loop when it stops (no thread waits long on a client);
    ``TimeoutError`` once it stays full for ``stall`` seconds."""
    loop = asyncio.get_running_loop()
    end = offset + count
    while offset < end:
        # The loop's executor, not anyio's: its limiter and cancel scopes cost more per
        # call than the sendfile of a small chunk (a thread hop per chunk either way).
        offset += await loop.run_in_executor(None, _send_some, sock, fd, offset, end - offset)
        if offset < end:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock, _settle, writable)
            try:
                with anyio.fail_after(stall):
                    await writable
            finally:
                loop.remove_writer(sock)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _send_some(sock: int, fd: int, offset: int, count: int) -> int:
    """``sendfile`` until ``count`` bytes went or the socket took nothing for ``PATIENCE``
    seconds (a slow client's wait then moves to the event loop); how many went."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(sock, fd, offset + sent, count - sent)
        except BlockingIOError:
            if not poller.poll(PATIENCE * 1000):
                break
            continue
        if n == 0:
            raise RuntimeError("the file ended before its Content-Length")
        sent += n
    return sent


def protocol_for(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` class sharing ``guard`` (uvicorn takes a class and builds one
    protocol per connection, so the process-wide counts ride on the class)."""

    class Protocol(GuardedProtocol):
        pass

    Protocol.guard = guard
    return Protocol


class ForwardedClientLimit:
    """ASGI: requests in progress per client behind a trusted proxy, at most
    ``guard.max_per_client`` (beyond: 503, ``Retry-After: 1``).

    Also sets ``scope["client"]`` to that client (uvicorn's own ``X-Forwarded-For``
    handling is turned off: it would trust 127.0.0.1 whatever ``WREG_TRUSTED_PROXIES``
    says). Requests from other peers pass untouched: their header is not believed.
    """

    def __init__(self, app: ASGIApp, guard: ConnectionGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] != "http" or not peer or not self.guard.is_trusted(peer[0]):
            await self.app(scope, receive, send)
            return
        named = (value for name, value in scope["headers"] if name == b"x-forwarded-for")
        host = forwarded_client(named, self.guard.trusted) or peer[0]
        scope["client"] = (host, 0)
        key = client_key(host)
        if not self.guard.take(self.guard.requests, key):
            self.guard.note("requests answered 503: the forwarded client had its cap in progress")
            response = error_response(
                ErrorCode.UNAVAILABLE,
                f"too many requests in progress from {host}; try again shortly",
                detail={"limit": self.guard.max_per_client},
            )
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.guard.give_back(self.guard.requests, key)
