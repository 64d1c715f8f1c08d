"""Moving models: ``push``, ``pull``, ``ls``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wreg.cli._common import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    app,
    client,
    emit,
    errors,
    human_size,
    progress,
)


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
    with errors(), progress(not as_json) as bars:
        r = client(url, token).push(directory, ref, progress=bars)
    emit(
        as_json,
        r.to_json(),
        f"pushed {r.reference} {r.manifest}\n"
        f"  {r.files} files, {human_size(r.bytes_total)}; new {human_size(r.bytes_new)} "
        f"in {r.chunks_new}/{r.chunks_total} chunks, sent {human_size(r.bytes_sent)}",
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
    with errors(), progress(not as_json) as bars:
        r = client(url, token).pull(ref, output, progress=bars)
    emit(
        as_json,
        r.to_json(),
        f"pulled {r.reference} {r.manifest}\n"
        f"  {r.files} files, {human_size(r.bytes_total)}; "
        f"downloaded {human_size(r.bytes_downloaded)}, "
        f"from cache {human_size(r.bytes_from_cache)}\n  {r.path}",
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
    with errors():
        registry = client(url, token)
        if repository is None:
            repos = registry.repositories()
            lines = [f"{r['name']:<40} {r['updated_at']}  {', '.join(r['tags'])}" for r in repos]
            emit(as_json, {"repositories": repos}, "\n".join(lines) or "(no repositories)")
        else:
            tags = registry.tags(repository)
            lines = [f"{t['tag']:<24} {t['digest']}  {t['updated_at']}" for t in tags]
            emit(as_json, {"name": repository, "tags": tags}, "\n".join(lines) or "(no tags)")
