"""Shared pieces of the CLI: the typer app, common options, error mapping, progress.

One place (``errors``) turns every ``WregError`` (and a bad ``WREG_*`` setting,
``SettingsError``) into a one-line message and a non-zero exit code; nothing reaches the
user as a traceback. Text that may come from a server (its error messages, names it
lists) passes through ``terminal_safe`` before it is printed, so a hostile registry cannot
clear the screen, rewrite a line with ``\r`` or reorder it with bidi controls.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wreg._config import SettingsError
from wreg.core.errors import WregError

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from wreg._client import Client

app = typer.Typer(
    name="wreg",
    help="Push, pull and cache ML model weights from a wreg registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's renderer costs ~60 ms of imports on every `--help`.
    rich_markup_mode=None,
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="WREG_URL", help="Registry URL.", show_default=False, metavar="URL"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="WREG_TOKEN", help="Bearer token.", show_default=False, metavar="TOKEN"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object; no progress.")]


def client(url: str | None, token: str | None) -> Client:
    from wreg._client import Client

    return Client(url, token)


def terminal_safe(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character (controls, ANSI escapes' ESC, ``\r``,
    bidi and zero-width format characters, separators) written as its Python escape
    (``\x1b``, ``\r``, ``\u202e``), except those in ``keep``. Linear; printable text is
    returned as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep or c == " " else repr(c)[1:-1] for c in text)


def _fail(message: str) -> None:
    typer.echo(terminal_safe(message), err=True)


@contextlib.contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except (WregError, SettingsError) as exc:
        _fail(f"error: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        _fail(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        raise typer.Exit(1) from None
    except Exception as exc:
        if os.environ.get("WREG_DEBUG"):
            raise
        _fail(
            f"error: internal error ({type(exc).__name__}: {exc}); set WREG_DEBUG=1 for a traceback"
        )
        raise typer.Exit(1) from None


class _Bars:
    """Rich progress bars, one per phase, on stderr."""

    def __init__(self, bars: RichProgress) -> None:
        self._bars = bars
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._bars.update(self._task, visible=False)
        self._task = self._bars.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._bars.advance(self._task, amount)


@contextlib.contextmanager
def progress(enabled: bool) -> Iterator[_Bars | None]:
    if not enabled or not sys.stderr.isatty() or not sys.stdout.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bars:
        yield _Bars(bars)


def emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else terminal_safe(text, keep="\n"))


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
