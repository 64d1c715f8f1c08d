"""The ``wreg`` command: a thin layer over ``wreg.Client``.

One place (``_errors``) turns every ``WregError`` into a one-line message and a non-zero
exit code; nothing reaches the user as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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
)

UrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="WREG_URL", help="Registry URL.", show_default=False)
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="WREG_TOKEN", help="Bearer token.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object; no progress.")]


def _client(url: str | None, token: str | None) -> Client:
    from wreg._client import Client

    return Client(url, token)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except WregError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        if os.environ.get("WREG_DEBUG"):
            raise
        typer.echo(
            f"error: internal error ({type(exc).__name__}: {exc}); "
            "set WREG_DEBUG=1 for a traceback",
            err=True,
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
def _progress(enabled: bool) -> Iterator[_Bars | None]:
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


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@app.command()
def push(
    directory: Annotated[Path, typer.Argument(help="Model directory to upload.")],
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME[@TAG]; default: the directory's name @latest."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a model directory; only chunks the registry lacks are sent."""
    with _errors(), _progress(not as_json) as bars:
        r = _client(url, token).push(directory, ref, progress=bars)
    _emit(
        as_json,
        r.to_json(),
        f"pushed {r.reference} {r.manifest}\n"
        f"  {r.files} files, {_size(r.bytes_total)}; new {_size(r.bytes_new)} "
        f"in {r.chunks_new}/{r.chunks_total} chunks, sent {_size(r.bytes_sent)}",
    )


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@TAG or NAME@blake3:<hex>.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Also place the files in this directory."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model into the node cache (and DIR with -o), verifying every byte."""
    with _errors(), _progress(not as_json) as bars:
        r = _client(url, token).pull(ref, output, progress=bars)
    _emit(
        as_json,
        r.to_json(),
        f"pulled {r.reference} {r.manifest}\n"
        f"  {r.files} files, {_size(r.bytes_total)}; downloaded {_size(r.bytes_downloaded)}, "
        f"from cache {_size(r.bytes_from_cache)}\n  {r.path}",
    )


@app.command("ls")
def list_(
    repository: Annotated[
        str | None, typer.Argument(help="List this repository's tags instead.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List repositories, or the tags of one repository."""
    with _errors():
        client = _client(url, token)
        if repository is None:
            repos = client.repositories()
            lines = [f"{r['name']:<40} {r['updated_at']}  {', '.join(r['tags'])}" for r in repos]
            _emit(as_json, {"repositories": repos}, "\n".join(lines) or "(no repositories)")
        else:
            tags = client.tags(repository)
            lines = [f"{t['tag']:<24} {t['digest']}  {t['updated_at']}" for t in tags]
            _emit(as_json, {"name": repository, "tags": tags}, "\n".join(lines) or "(no tags)")


def main() -> None:
    app()
