"""Shared pieces of the CLI: the typer app, common options, error mapping, progress.

One place (``errors``, and ``run`` for the command line itself) turns every failure
into a one-line ``error: ...`` on stderr and an exit status; nothing reaches the user as a
traceback. With ``--json`` the failure is also printed on stdout as the registry's error
envelope, ``{"errors": [{"code", "message", "detail"}]}``, ``code`` from the one table
(``ErrorCode``). Exit statuses::

    0    success
    1    the command failed: any error wreg reports (``WregError``), a reference
         ``cache warm`` could not pull, a problem ``cache verify`` found
    2    the command line or the configuration is wrong (``USAGE_INVALID``,
         ``SETTING_INVALID``): an unknown option, a missing argument, a bad value, a bad
         ``WREG_*`` setting, ``cache warm`` without references
    130  interrupted (Ctrl-C)

Text that may come from a server (its error messages, names it lists) passes through
``terminal_safe`` before it is printed, so a hostile registry cannot clear the screen,
rewrite a line with ``\r`` or reorder it with bidi controls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer
from typer.core import TyperCommand

from wreg.core.errors import ErrorCode, WregError

if TYPE_CHECKING:
    from types import FrameType

    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID
    from typer._click import Context

    from wreg._client import Client

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
USAGE_CODES: Final = frozenset({ErrorCode.USAGE_INVALID, ErrorCode.SETTING_INVALID})
"""The codes of a wrong command line or configuration: exit status 2, not 1."""
INTERRUPT_GRACE_S: Final = 3.0
"""After Ctrl-C, the command exits 130 within this long whatever it is waiting on."""
_interrupt_reported = threading.Event()
_interrupted = threading.Event()
MAX_TAGS_SHOWN: Final = 10
"""Existing tags an unknown-tag error lists (then ``and N more``)."""

app = typer.Typer(
    name="wreg",
    help="Push, pull and cache ML model weights from a wreg registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's renderer costs ~60 ms of imports on every `--help`.
    rich_markup_mode=None,
)


class Command(TyperCommand):
    """A command whose usage line reads ``wreg pull [OPTIONS] REF``: typer writes a
    required argument as ``{REF}``, which reads as markup to be filled in."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"wreg {version('wreg')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Push, pull and cache ML model weights from a wreg registry."""


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
    from wreg._config import registry_root

    return Client(registry_root(url, "--url/WREG_URL") if url else None, token)


def terminal_safe(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character (controls, ANSI escapes' ESC, ``\r``,
    bidi and zero-width format characters, separators) written as its Python escape
    (``\x1b``, ``\r``, ``\u202e``), except those in ``keep``. Linear; printable text is
    returned as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep or c == " " else repr(c)[1:-1] for c in text)


def exit_status(code: ErrorCode) -> int:
    """The exit status of a failure with ``code``: 2 for a wrong command line or setting,
    1 for everything else."""
    return EXIT_USAGE if code in USAGE_CODES else EXIT_FAILED


def envelope(error: WregError) -> dict[str, Any]:
    """``--json``'s form of a failure: the registry's error envelope, with the message the
    ``error: ...`` line has (hints and request id included)."""
    return {"errors": [{"code": error.code.name, "message": str(error), "detail": error.detail}]}


def fail(error: WregError, as_json: bool = False) -> NoReturn:
    """Report ``error`` (one line on stderr; with ``as_json`` also its envelope on stdout)
    and exit with its status."""
    typer.echo(terminal_safe(f"error: {error}"), err=True)
    if as_json:
        typer.echo(json.dumps(envelope(error), default=str))
    raise typer.Exit(exit_status(error.code))


@contextlib.contextmanager
def errors(
    as_json: bool = False, url: str | None = None, token: str | None = None
) -> Iterator[None]:
    """Turn a failure in the block into ``fail``: one line, the envelope with ``as_json``,
    the exit status of its code. ``typer.Exit`` (a command's own exit status) and
    ``typer.Abort`` pass through as they are. ``url``/``token`` are the registry's, for
    hints that ask it (the tags of a repository whose tag is unknown)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except WregError as exc:
        fail(explain(exc, url, token), as_json)
    except KeyboardInterrupt:
        _report_interrupt()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        message = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        detail = {"errno": exc.errno, "path": None if exc.filename is None else str(exc.filename)}
        fail(ErrorCode.LOCAL_IO_FAILED.error(message, detail=detail), as_json)
    except Exception as exc:
        if os.environ.get("WREG_DEBUG"):
            raise
        message = f"internal error ({type(exc).__name__}: {exc}); set WREG_DEBUG=1 for a traceback"
        fail(ErrorCode.INTERNAL.error(message), as_json)
    except BaseException as exc:  # asyncio's CancelledError, after Ctrl-C (_on_interrupt)
        if not _interrupted.is_set() or not _is_cancellation(exc):
            raise
        _report_interrupt()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _is_cancellation(exc: BaseException) -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def explain(error: WregError, url: str | None, token: str | None) -> WregError:
    """``error`` with a hint for the common mistakes: an unknown tag lists the tags the
    repository has (asked of the registry; without them if that fails too); a route the
    registry lacks asks whether the URL is the registry's root."""
    if error.code is ErrorCode.TAG_UNKNOWN and isinstance(error.detail, dict):
        name = error.detail.get("name")
        if not isinstance(name, str):
            return error
        try:
            tags = [str(t["tag"]) for t in client(url, token).tags(name)]
        except (WregError, KeyError, TypeError):
            return error
        shown = tags[:MAX_TAGS_SHOWN]
        more = f" and {len(tags) - len(shown)} more" if len(tags) > len(shown) else ""
        hint = f"its tags: {', '.join(shown)}{more}" if tags else "it has no tags"
        detail = {**error.detail, "tags": shown, "tags_total": len(tags)}
        return error.code.error(
            f"{error.message}; {hint}", detail=detail, request_id=error.request_id
        )
    if error.code is ErrorCode.NOT_FOUND:
        where = url or "the registry URL"
        return error.code.error(
            f"{error.message}: is {where} the registry's root URL? (--url, WREG_URL)",
            detail=error.detail,
            request_id=error.request_id,
        )
    return error


def _report_interrupt() -> None:
    if not _interrupt_reported.is_set():
        _interrupt_reported.set()
        typer.echo("interrupted", err=True)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: ``KeyboardInterrupt`` as usual (``errors`` reports it; a pull keeps its
    progress records for the next run), and a watchdog that ends the process with status
    130 ``INTERRUPT_GRACE_S`` later if it is still running: a cancellation lost in a
    library's shielded clean-up must not leave the command waiting out a network timeout."""

    def force_exit() -> None:
        time.sleep(INTERRUPT_GRACE_S)
        if not _interrupt_reported.is_set():
            os.write(2, b"interrupted\n")
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=force_exit, name="wreg-interrupt", daemon=True).start()
    _interrupted.set()
    asyncio = sys.modules.get("asyncio")  # not imported: no event loop runs
    loop = asyncio._get_running_loop() if asyncio is not None else None
    if asyncio is None or loop is None:
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
        return
    # Inside asyncio.run, as its own handler would: cancel, and let the CancelledError
    # leave asyncio.run (``errors`` reports it as the interrupt).
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.call_soon_threadsafe(lambda: None)


def run(args: Sequence[str] | None = None) -> int:
    """``wreg ARGS``: the command's exit status. A wrong command line is reported as click
    does (usage, then ``Error: ...``, status 2) and, with ``--json`` among the arguments,
    as the envelope of a ``USAGE_INVALID`` error on stdout. Ctrl-C ends it with 130
    (``_on_interrupt``)."""
    argv = list(sys.argv[1:] if args is None else args)
    command = typer.main.get_command(app)
    ours = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if ours:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        return _run(command, argv)
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(command: Any, argv: list[str]) -> int:
    try:
        status = command.main(argv, prog_name="wreg", standalone_mode=False)
    except typer.Abort:
        _report_interrupt()
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:  # click's UsageError and its kin
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        if "--json" in argv:
            error = ErrorCode.USAGE_INVALID.error(exc.format_message())
            typer.echo(json.dumps(envelope(error)))
        return exc.exit_code
    return status if isinstance(status, int) else 0


class _Bars:
    """Rich progress bars, one per phase, on stderr."""

    def __init__(self, bars: RichProgress) -> None:
        self._bars = bars
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._bars.update(self._task, visible=False)
        self._task = self._bars.add_task(description, total=total)
        # A first sample at 0 bytes, now: the rate is then measured from the phase's
        # start, not between its first two advances (two chunks landing together read
        # as GB/s).
        self._bars.advance(self._task, 0)

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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """``rows`` under a header row, in columns as wide as their widest cell; the columns
    numbered in ``right`` are right-aligned (numbers)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
