"""The node cache: ``wreg cache ls|warm|prune|pin|unpin|verify``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated

import typer

from wreg.cli._common import (
    Command,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    client,
    emit,
    errors,
    fail,
    human_size,
    table,
)
from wreg.core.errors import ErrorCode

app = typer.Typer(
    name="cache",
    help="Inspect and maintain the node cache ($WREG_CACHE, default ~/.cache/wreg).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _when(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


@app.command("ls", cls=Command)
def list_(as_json: JsonOpt = False) -> None:
    """List cached models: repository, tags, size, last use, pinned, complete."""
    with errors(as_json):
        listing = client(None, None).cache_ls()
    rows = [
        [
            s.repository,
            ",".join(s.tags) or "-",
            s.manifest[7:19],
            human_size(s.bytes_total),
            _when(s.last_used),
            " ".join(f for f, on in (("pinned", s.pinned), ("incomplete", not s.complete)) if on),
        ]
        for s in listing.snapshots
    ]
    headers = ["repository", "tags", "manifest", "size", "last used", "state"]
    lines = table(headers, rows, {3}) if rows else ["(no cached models)"]
    lines.append(
        f"{listing.path}: {human_size(listing.bytes_blobs)} in blobs, "
        f"{human_size(listing.bytes_partial)} in partial downloads"
    )
    emit(as_json, listing.to_json(), "\n".join(lines))


@app.command(cls=Command)
def warm(
    refs: Annotated[
        list[str] | None,
        typer.Argument(help="References to pull into the cache.", metavar="REF"),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Also read references from this file, one per line.", metavar="FILE"
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pull references into the cache (for cron): idempotent, one line per reference,
    exit status 1 if any failed. Overlapping runs wait for each other."""
    wanted = list(refs or [])
    with errors(as_json, url, token):
        if from_file is not None:
            for line in from_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    wanted.append(line)
        if not wanted:
            error = ErrorCode.USAGE_INVALID.error("no references given (arguments or --from FILE)")
            fail(error, as_json)

        def log(r: object) -> None:
            from wreg._results import WarmResult

            assert isinstance(r, WarmResult)  # noqa: S101 - narrows the callback's result
            if as_json:
                return
            if r.ok:
                typer.echo(
                    f"ok    {r.reference} {r.manifest} "
                    f"downloaded {human_size(r.bytes_downloaded)} in {r.seconds:.1f}s"
                )
            else:
                typer.echo(f"FAIL  {r.reference}: {r.error}")

        results = client(url, token).cache_warm(wanted, on_result=log)
    failed = sum(not r.ok for r in results)
    if as_json:
        typer.echo(json.dumps({"results": [r.to_json() for r in results], "failed": failed}))
    if failed:
        raise typer.Exit(1)


@app.command(cls=Command)
def prune(
    max_size: Annotated[
        str, typer.Option("--max-size", help="Target size, e.g. 500G, 1.5TiB, 0.", metavar="SIZE")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove least recently used snapshots until the cache fits; never one in use or
    pinned."""
    with errors(as_json):
        r = client(None, None).cache_prune(max_size, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {s}" for s in r.removed]
    lines += [f"kept (in use) {s}" for s in r.kept_in_use]
    lines += [f"kept (pinned) {s}" for s in r.kept_pinned]
    lines.append(f"{human_size(r.bytes_before)} -> {human_size(r.bytes_after)}")
    emit(as_json, r.to_json(), "\n".join(lines))


@app.command(cls=Command)
def pin(
    ref: Annotated[str, typer.Argument(help="A cached NAME[@TAG|@DIGEST].", metavar="REF")],
    as_json: JsonOpt = False,
) -> None:
    """Keep a cached model from being pruned."""
    with errors(as_json):
        digest = client(None, None).cache_pin(ref)
    emit(as_json, {"reference": ref, "manifest": digest, "pinned": True}, f"pinned {ref} {digest}")


@app.command(cls=Command)
def unpin(
    ref: Annotated[str, typer.Argument(help="A cached NAME[@TAG|@DIGEST].", metavar="REF")],
    as_json: JsonOpt = False,
) -> None:
    """Let a pinned model be pruned again."""
    with errors(as_json):
        digest = client(None, None).cache_unpin(ref)
    emit(
        as_json, {"reference": ref, "manifest": digest, "pinned": False}, f"unpinned {ref} {digest}"
    )


@app.command(cls=Command)
def verify(
    repair: Annotated[
        bool, typer.Option("--repair", help="Pull the snapshots that lost a corrupt file again.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every cached file; exit status 1 if anything is (still) wrong."""
    with errors(as_json, url, token):
        r = client(url, token).cache_verify(repair=repair)
    lines = []
    for digest in r.corrupt:  # each corrupt blob, then every cached model file it is
        files = [f for f in r.corrupt_files if f.blob == digest]
        lines.append(f"corrupt {digest}" + ("" if files else " (no cached model uses it)"))
        lines += [
            f"  {f.repository}@{','.join(f.tags) or f.manifest}: {f.path} ({f.blob})" for f in files
        ]
    lines += [f"repaired {s}" for s in r.repaired]
    lines += [f"incomplete {s}" for s in r.incomplete]
    lines.append(
        f"checked {r.blobs_checked} files, {human_size(r.bytes_checked)}: "
        + ("ok" if r.ok else "problems found")
    )
    emit(as_json, r.to_json(), "\n".join(lines))
    if not r.ok:
        raise typer.Exit(1)
