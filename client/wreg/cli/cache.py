"""The node cache: ``wreg cache ls|warm|prune|pin|unpin|verify``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated

import typer

from wreg.cli._common import JsonOpt, TokenOpt, UrlOpt, client, emit, errors, human_size

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


@app.command("ls")
def list_(as_json: JsonOpt = False) -> None:
    """List cached models: repository, tags, size, last use, pinned, complete."""
    with errors():
        listing = client(None, None).cache_ls()
    lines = [
        f"{s.repository:<32} {','.join(s.tags) or '-':<16} {s.manifest[7:19]}  "
        f"{human_size(s.bytes_total):>9}  {_when(s.last_used)}"
        f"{'  pinned' if s.pinned else ''}{'' if s.complete else '  incomplete'}"
        for s in listing.snapshots
    ]
    lines.append(
        f"{listing.path}: {human_size(listing.bytes_blobs)} in blobs, "
        f"{human_size(listing.bytes_partial)} in partial downloads"
    )
    emit(as_json, listing.to_json(), "\n".join(lines))


@app.command()
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
    with errors():
        if from_file is not None:
            for line in from_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    wanted.append(line)
        if not wanted:
            typer.echo("error: no references given (arguments or --from FILE)", err=True)
            raise typer.Exit(2)

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


@app.command()
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
    with errors():
        r = client(None, None).cache_prune(max_size, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {s}" for s in r.removed]
    lines += [f"kept (in use) {s}" for s in r.kept_in_use]
    lines += [f"kept (pinned) {s}" for s in r.kept_pinned]
    lines.append(f"{human_size(r.bytes_before)} -> {human_size(r.bytes_after)}")
    emit(as_json, r.to_json(), "\n".join(lines))


@app.command()
def pin(
    ref: Annotated[str, typer.Argument(help="A cached NAME[@TAG|@DIGEST].", metavar="REF")],
    as_json: JsonOpt = False,
) -> None:
    """Keep a cached model from being pruned."""
    with errors():
        digest = client(None, None).cache_pin(ref)
    emit(as_json, {"reference": ref, "manifest": digest, "pinned": True}, f"pinned {ref} {digest}")


@app.command()
def unpin(
    ref: Annotated[str, typer.Argument(help="A cached NAME[@TAG|@DIGEST].", metavar="REF")],
    as_json: JsonOpt = False,
) -> None:
    """Let a pinned model be pruned again."""
    with errors():
        digest = client(None, None).cache_unpin(ref)
    emit(
        as_json, {"reference": ref, "manifest": digest, "pinned": False}, f"unpinned {ref} {digest}"
    )


@app.command()
def verify(
    repair: Annotated[
        bool, typer.Option("--repair", help="Pull the snapshots that lost a corrupt file again.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every cached file; exit status 1 if anything is (still) wrong."""
    with errors():
        r = client(url, token).cache_verify(repair=repair)
    lines = [f"corrupt {d}" for d in r.corrupt]
    lines += [
        f"  {f.repository}@{','.join(f.tags) or f.manifest}: {f.path} ({f.blob})"
        for f in r.corrupt_files
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
