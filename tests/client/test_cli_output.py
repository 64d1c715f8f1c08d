"""Text from a registry is escaped before it reaches the terminal.

A hostile registry's error message with ANSI escapes (``\\x1b[2J`` clears the screen),
carriage returns (overwrite what the user sees) or bidi overrides is printed with those
characters spelled out, never interpreted. Against an aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from wreg.cli import app
from wreg.cli._common import terminal_safe
from wreg.testing.webapps import start_app

HOSTILE = [
    "\x1b[2J\x1b[Hall good, nothing to see",
    "fine\rerror: none",
    "line one\nwreg: pulled 0 files",
    "name \u202eexe.txt",
    "bell\x07 and \x9b31m CSI",
    "zero\u200bwidth",
]


@pytest.fixture
def hostile_registry() -> Iterator[tuple[str, list[str]]]:
    """A registry answering every request with 400 and the next hostile message."""
    messages = list(HOSTILE)
    sent: list[str] = []
    ready = threading.Event()
    stopping: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    port = 0

    async def answer(request: web.Request) -> web.Response:
        message = messages[len(sent) % len(messages)]
        sent.append(message)
        body = {"errors": [{"code": "MANIFEST_INVALID", "message": message, "detail": None}]}
        return web.json_response(body, status=400)

    async def serve() -> None:
        nonlocal port
        application = web.Application()
        application.add_routes([web.route("*", "/{tail:.*}", answer)])
        runner, port = await start_app(application)
        stop = asyncio.Event()
        stopping.append((asyncio.get_running_loop(), stop))
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", sent
    finally:
        loop, stop = stopping[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_server_error_messages_are_escaped(
    hostile_registry: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sent = hostile_registry
    monkeypatch.setenv("WREG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WREG_TOKEN", raising=False)
    for i in range(len(HOSTILE)):
        result = CliRunner().invoke(app, ["pull", "evil/m@v1", "--url", url])
        assert result.exit_code == 1, result.output
        message = sent[-1]
        assert message == HOSTILE[i]
        printed = result.stderr
        assert printed.startswith("error: ")
        assert printed.endswith("\n")
        line = printed[:-1]
        assert line.isprintable(), repr(line)
        assert terminal_safe(message) in line


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("a\rb", "a\\rb"),
        ("a\nb", "a\\nb"),
        ("a\u202eb", "a\\u202eb"),
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),
        ("\x9b", "\\x9b"),
        ("tab\there", "tab\\there"),
        ("modèle 模型 ok", "modèle 模型 ok"),
    ],
)
def test_terminal_safe_spells_out_non_printables(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown
    assert terminal_safe("x\ny", keep="\n") == "x\ny"
