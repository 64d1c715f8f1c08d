"""Slow and greedy clients cannot make the server refuse everyone else (issue 9, item 3).

One real ``wreg-server serve`` on 127.0.0.1 with short deadlines. Every client below
speaks raw HTTP/1.1 over sockets so the test decides exactly what is sent and when.
Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket bound to
127.0.0.2 before it connects is, to the server, another client than one bound to
127.0.0.3: that is how "one client at its cap, another one still served" is tested
without a second machine. 127.0.0.1 is configured as a trusted proxy, so its requests
are counted by their ``X-Forwarded-For`` client instead.

Everything is bounded: at most ``SLOW`` sockets, and every wait has a deadline a few
seconds past the server's, so against a server without these protections each test
fails in seconds instead of hanging.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from wreg.core.digest import digest_bytes
from wreg.testing.servers import RunningServer, start_server
from wreg_server import cli
from wreg_server.serving import (
    ForwardedClientLimit,
    GuardedProtocol,
    client_key,
    forwarded_client,
)
from wreg_server.settings import ServerSettings, parse_networks

HEADER_TIMEOUT = 2.0  # WREG_HEADER_TIMEOUT
BODY_TIMEOUT = 3.0  # WREG_BODY_TIMEOUT: the longest pause, and the head start of the rate
MIN_RATE = 50  # WREG_BODY_MIN_RATE, bytes/s
CAP = 8  # WREG_MAX_CLIENT_CONNECTIONS
MAX_BUSY = 100  # WREG_MAX_CONNECTIONS: fewer than the slow sockets opened below
SLOW = 200
PROXY = "127.0.0.1"

SERVER_ENV = {
    "WREG_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "WREG_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "WREG_BODY_MIN_RATE": str(MIN_RATE),
    "WREG_MAX_CLIENT_CONNECTIONS": str(CAP),
    "WREG_MAX_CONNECTIONS": str(MAX_BUSY),
    "WREG_TRUSTED_PROXIES": PROXY,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("slow") / "data", SERVER_ENV)
    yield running
    running.stop()


def address_of(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(server: RunningServer, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(address_of(server))
    return sock


def get(
    server: RunningServer, source: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """``GET /healthz`` on a fresh connection from ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, trust_env=False, timeout=5) as client:
        return client.get(f"{server.url}/healthz", headers=headers)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one (small, ``Content-Length``-framed) response."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            raise AssertionError(f"connection closed mid-response: {data!r}")
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), after whatever it sent last."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except OSError:
        return True
    return False


def server_errors(server: RunningServer) -> list[str]:
    lines = server.log.read_text(errors="replace").splitlines()
    return [line for line in lines if " ERROR " in line or "Traceback" in line]


def test_slow_headers_are_cut_off_at_the_deadline_and_healthz_still_answers(
    server: RunningServer,
) -> None:
    """``SLOW`` sockets from 25 addresses (``CAP`` each: at the per-client cap, not over
    it) that never finish a request, four ways: sending nothing; a request line trickled
    a byte at a time; headers trickled a byte at a time; and, after one complete request
    and response, the next request's headers trickled (a keep-alive connection, where
    uvicorn's own keep-alive timer stops at the first byte). A fresh client is answered
    at once, and the server closes every slow socket after ``HEADER_TIMEOUT``, however
    steadily it trickles."""
    starts = [
        b"",
        b"GET /healthz?",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    socks: list[socket.socket] = []
    opened: list[float] = []
    try:
        for i in range(SLOW):
            sock = connect(server, f"127.0.1.{i // CAP + 1}")
            socks.append(sock)
            opened.append(time.monotonic())
            sock.sendall(starts[i % 4])
        for sock in socks[3::4]:  # keep-alive: the first request is answered...
            assert read_response(sock)[0] == 200
            sock.sendall(starts[2])  # ...then the next one trickles
        trickling = [i for i in range(SLOW) if i % 4]

        t0 = time.monotonic()
        r = get(server, "127.0.0.3")
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 1.5

        closed_at: dict[int, float] = {}
        deadline = time.monotonic() + HEADER_TIMEOUT + 4
        while len(closed_at) < SLOW and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if i not in closed_at and closed_by_server(sock):
                    closed_at[i] = time.monotonic()
            for i in trickling:
                if i not in closed_at:
                    with contextlib.suppress(OSError):  # closed meanwhile: seen next round
                        socks[i].send(b"a")
            time.sleep(0.25)
    finally:
        for sock in socks:
            sock.close()
    assert len(closed_at) == SLOW, f"{SLOW - len(closed_at)} slow sockets still open"
    early = [i for i, t in closed_at.items() if t - opened[i] < HEADER_TIMEOUT - 0.25]
    assert not early, f"closed before the deadline: {early}"
    assert server_errors(server) == []


def test_connections_beyond_the_per_client_cap_are_closed_at_once(server: RunningServer) -> None:
    """127.0.0.2 opens ``CAP + 4`` connections and sends nothing: the last four are closed
    at once (long before the header deadline), and so is a further one; 127.0.0.3 is
    served meanwhile; once 127.0.0.2 closes its connections it is served again."""
    greedy = "127.0.0.2"
    socks = [connect(server, greedy) for _ in range(CAP + 4)]
    try:
        deadline = time.monotonic() + HEADER_TIMEOUT / 2
        while time.monotonic() < deadline:
            closed = [i for i, sock in enumerate(socks) if closed_by_server(sock)]
            if len(closed) >= 4:
                break
            time.sleep(0.05)
        assert len(closed) == 4, f"closed before the header deadline: {closed}"
        assert get(server, "127.0.0.3").status_code == 200

        extra = connect(server, greedy)
        time.sleep(0.3)
        assert closed_by_server(extra)
        extra.close()
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 3
    while True:  # the server counts the closes down as it sees them
        try:
            if get(server, greedy).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def start_slow_post(server: RunningServer, source: str, forwarded_for: str) -> socket.socket:
    """A request whose headers are complete and whose body has only begun: in progress."""
    sock = connect(server, source)
    sock.sendall(
        b"POST /v1/repositories/t/m/chunks/missing HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Forwarded-For: " + forwarded_for.encode() + b"\r\nContent-Length: 400\r\n\r\n{"
    )
    return sock


def test_behind_a_trusted_proxy_the_cap_counts_forwarded_clients(server: RunningServer) -> None:
    """Through the trusted proxy (127.0.0.1), 203.0.113.7 has ``CAP`` requests in
    progress: its next one is a 503, even with a made-up client prepended to
    ``X-Forwarded-For``; another forwarded client is served, over more than ``CAP``
    connections from the proxy (a proxy is not capped per connection); a direct client
    naming 203.0.113.7 in the header is not affected (the header is only believed from
    a trusted proxy). The held requests then end in 408 as their bodies stall."""
    held = [start_slow_post(server, PROXY, "203.0.113.7") for _ in range(CAP)]
    try:
        time.sleep(0.3)  # let the server read their headers
        busy = get(server, PROXY, {"X-Forwarded-For": "203.0.113.7"})
        assert busy.status_code == 503, busy.text
        assert busy.json()["errors"][0]["code"] == "UNAVAILABLE"
        spoofed = get(server, PROXY, {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"})
        assert spoofed.status_code == 503, spoofed.text
        other = get(server, PROXY, {"X-Forwarded-For": "203.0.113.7, 198.51.100.9"})
        assert other.status_code == 200, other.text
        direct = get(server, "127.0.0.5", {"X-Forwarded-For": "203.0.113.7"})
        assert direct.status_code == 200, direct.text
        for sock in held:
            sock.settimeout(BODY_TIMEOUT + 4)
            status, body = read_response(sock)
            assert status == 408, body
            assert b"REQUEST_TIMEOUT" in body
    finally:
        for sock in held:
            sock.close()
    assert get(server, PROXY, {"X-Forwarded-For": "203.0.113.7"}).status_code == 200


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_slower_than_the_minimum_rate_is_refused(
    server: RunningServer, framing: str
) -> None:
    """Two body bytes every 0.25 s (8 B/s, under ``MIN_RATE``), never pausing as long as
    ``BODY_TIMEOUT``: the idle timeout alone would wait for the whole body. The server
    answers 408 ``REQUEST_TIMEOUT`` once the body falls ``BODY_TIMEOUT`` behind the
    minimum rate (~3.6 s here), and logs no server error."""
    if framing == "chunked":
        head = (
            f"PUT /v1/repositories/t/m/chunks/{digest_bytes(b'x')} HTTP/1.1\r\nHost: t\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"2\r\nab\r\n"
    else:
        head = (
            "POST /v1/repositories/t/m/chunks/missing HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 400\r\n\r\n{"
        )
        piece = b"  "
    sock = connect(server, "127.0.0.4")
    answered = False
    try:
        sock.sendall(head.encode())
        t0 = time.monotonic()
        while time.monotonic() - t0 < BODY_TIMEOUT + 5:
            if select.select([sock], [], [], 0.25)[0]:
                answered = True
                break
            sock.sendall(piece)
        elapsed = time.monotonic() - t0
        assert answered, f"no answer after {elapsed:.1f} s of a body at 8 B/s"
        status, body = read_response(sock)
    finally:
        sock.close()
    assert status == 408, body
    assert b"REQUEST_TIMEOUT" in body
    assert b"too slowly" in body
    assert BODY_TIMEOUT < elapsed < BODY_TIMEOUT + 3
    assert server_errors(server) == []


def test_trusted_proxies_setting_is_parsed_and_checked(tmp_path: Path) -> None:
    settings = ServerSettings(data=tmp_path, trusted_proxies="10.0.0.0/8, 192.0.2.7,::1")
    assert [str(n) for n in settings.trusted_proxy_networks] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "::1/128",
    ]
    assert ServerSettings(data=tmp_path).trusted_proxy_networks == ()
    with pytest.raises(ValidationError, match="trusted_proxies"):
        ServerSettings(data=tmp_path, trusted_proxies="10.0.0.0/8, proxy.internal")


def test_clients_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert (
        client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::1") == ("2001:db8:1:2::/64")
    )
    assert client_key("2001:db8:1:3::5") != client_key("2001:db8:1:2::5")


def test_forwarded_client_is_the_rightmost_untrusted_hop() -> None:
    trusted = parse_networks("10.0.0.0/8")
    assert forwarded_client([b"198.51.100.9, 203.0.113.7"], trusted) == "203.0.113.7"
    assert forwarded_client([b"203.0.113.7, 10.1.2.3", b"10.0.0.9"], trusted) == "203.0.113.7"
    assert forwarded_client([b"10.1.2.3"], trusted) == "10.1.2.3"
    assert forwarded_client([b" , "], trusted) is None
    assert forwarded_client([], trusted) is None


def test_serve_runs_the_guarded_protocol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``serve`` hands uvicorn the guarded protocol and the forwarded-client limit, and
    turns off uvicorn's own ``X-Forwarded-For`` handling (which trusts 127.0.0.1)."""
    captured: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: captured.update(kw, app=app))
    monkeypatch.setattr("wreg_server.logs.configure", lambda *a, **k: None)
    monkeypatch.setenv("WREG_MAX_CLIENT_CONNECTIONS", "5")
    monkeypatch.setenv("WREG_TRUSTED_PROXIES", "10.0.0.0/8")
    result = CliRunner().invoke(cli.app, ["serve", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert issubclass(captured["http"], GuardedProtocol)
    guard = captured["http"].guard
    assert guard.max_per_client == 5
    assert [str(n) for n in guard.trusted] == ["10.0.0.0/8"]
    assert isinstance(captured["app"], ForwardedClientLimit)
    assert captured["app"].guard is guard
    assert captured["proxy_headers"] is False
