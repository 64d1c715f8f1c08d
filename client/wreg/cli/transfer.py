"""Moving models: ``push``, ``import-hf``, ``pull``, ``ls``, ``rm``."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from wreg.cli._common import (
    Command,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    app,
    client,
    emit,
    errors,
    human_size,
    progress,
    table,
)
from wreg.core.errors import ErrorCode


@app.command(cls=Command)
def push(
    directory: Annotated[Path, typer.Argument(help="Model directory to upload.", metavar="DIR")],
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME[@TAG]; default: the directory's name @latest.", metavar="REF"),
    ] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option("--follow-symlinks", help="Follow symlinks that leave the directory."),
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a model directory; only chunks the registry lacks are sent."""
    with errors(as_json, url, token), progress(not as_json) as bars:
        r = client(url, token).push(directory, ref, progress=bars, follow_symlinks=follow_symlinks)
    skips = "".join(f"skipped {p}: a symlink out of the directory\n" for p in r.skipped)
    emit(
        as_json,
        r.to_json(),
        f"{skips}pushed {r.reference} {r.manifest}\n"
        f"  {r.files} files, {human_size(r.bytes_total)}; new {human_size(r.bytes_new)} "
        f"in {r.chunks_new}/{r.chunks_total} chunks, sent {human_size(r.bytes_sent)}",
    )


@app.command("import-hf", cls=Command)
def import_hf(
    path: Annotated[
        Path,
        typer.Argument(
            help="An HF cache repository (models--org--name), one of its snapshots/<commit>, "
            "a local_dir download, or a hub cache root with --repo-id.",
            metavar="PATH",
        ),
    ],
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME[@TAG]; default: the HF id in lowercase @latest.", metavar="REF"),
    ] = None,
    repo_id: Annotated[
        str | None,
        typer.Option("--repo-id", help="The HF repository id (Org/Name).", metavar="ID"),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            help="A ref under refs/ or a commit in snapshots/; default: main.",
            metavar="REV",
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push a Hugging Face snapshot already on disk, without downloading it again."""
    with errors(as_json, url, token), progress(not as_json) as bars:
        r = client(url, token).import_hf(
            path, ref, repo_id=repo_id, revision=revision, progress=bars
        )
    emit(
        as_json,
        r.to_json(),
        f"imported {r.reference} {r.manifest}\n"
        f"  {r.files} files, {human_size(r.bytes_total)}; new {human_size(r.bytes_new)} "
        f"in {r.chunks_new}/{r.chunks_total} chunks, sent {human_size(r.bytes_sent)}",
    )


class Link(enum.StrEnum):
    """``wreg pull --link``: ``wreg._cache_ops.LinkMode``."""

    hardlink = "hardlink"
    copy = "copy"
    reflink = "reflink"
    symlink = "symlink"


@app.command(cls=Command)
def pull(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@TAG or NAME@blake3:<hex>.", metavar="REF")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Also place the files in this directory.", metavar="DIR"
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include", help="Only files matching this glob (repeatable).", metavar="GLOB"
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", help="Skip files matching this glob (repeatable).", metavar="GLOB"
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", envvar="WREG_OFFLINE", help="Use the node cache only; no network."
        ),
    ] = False,
    max_total: Annotated[
        str | None,
        typer.Option(
            "--max-total",
            metavar="SIZE",
            help="Refuse to write more than SIZE (e.g. 500G); default: the free space.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite files in DIR that hold other content."),
    ] = False,
    link: Annotated[
        Link,
        typer.Option(
            "--link",
            metavar="MODE",
            help="How files get into DIR: hardlink (instant, shares the cached blob), copy "
            "or reflink (for a DIR you will write into), symlink (to the cached blob).",
        ),
    ] = Link.hardlink,
    tensors: Annotated[
        list[str] | None,
        typer.Option(
            "--tensors",
            help="Only tensors whose name matches this glob (repeatable); needs -o. "
            "Safetensors files in DIR then hold just those tensors.",
            metavar="GLOB",
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Only rank R's part of every tensor's dim 0, of W near-equal parts; needs -o.",
            metavar="R/W",
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model into the node cache (and DIR with -o), verifying every byte.

    Resumes an interrupted pull; waits for (and reuses) another process pulling the
    same files on this node. With --tensors or --shard, only the chunks holding the
    selected tensor bytes are fetched (they stay in the cache as partial files a later
    pull completes) and DIR gets valid safetensors files holding only them.
    """
    if tensors or shard is not None:
        _pull_tensors(
            ref, output, include, exclude, offline, force, tensors, shard, url, token, as_json
        )
        return
    with errors(as_json, url, token), progress(not as_json) as bars:
        registry = client(url, token)
        registry.offline = registry.offline or offline
        r = registry.pull(
            ref,
            output,
            progress=bars,
            include=include or (),
            exclude=exclude or (),
            max_total=max_total,
            force=force,
            link=link.value,
        )
    emit(
        as_json,
        r.to_json(),
        f"pulled {r.reference} {r.manifest}\n"
        f"  {r.files} files, {human_size(r.bytes_total)}; "
        f"downloaded {human_size(r.bytes_downloaded)}, "
        f"from cache {human_size(r.bytes_from_cache)}\n  {r.path}",
    )


def _pull_tensors(
    ref: str,
    output: Path | None,
    include: list[str] | None,
    exclude: list[str] | None,
    offline: bool,
    force: bool,
    tensors: list[str] | None,
    shard: str | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    with errors(as_json, url, token), progress(not as_json) as bars:
        if output is None:
            raise ErrorCode.SELECTION_INVALID.error(
                "--tensors/--shard write new safetensors files: give -o DIR"
            )
        parsed_shard = None
        if shard is not None:
            rank, _, world = shard.partition("/")
            if not (rank.isdigit() and world.isdigit()):
                raise ErrorCode.SELECTION_INVALID.error(
                    f"--shard {shard!r}: give RANK/WORLD, e.g. 0/2"
                )
            parsed_shard = (int(rank), int(world))
        registry = client(url, token)
        registry.offline = registry.offline or offline
        r = registry.pull_tensors(
            ref,
            output,
            tensors=tensors,
            shard=parsed_shard,
            include=include or (),
            exclude=exclude or (),
            force=force,
            progress=bars,
        )
    emit(
        as_json,
        r,
        f"pulled {r['tensors']} tensors of {ref} {r['manifest']}\n"
        f"  {human_size(r['bytes_tensors'])} of tensors; fetched {human_size(r['bytes_fetched'])} "
        f"of the model's {human_size(r['bytes_model'])} "
        f"({human_size(r['bytes_downloaded'])} on the wire)\n  {r['path']}",
    )


@app.command("ls", cls=Command)
def list_(
    repository: Annotated[
        str | None, typer.Argument(help="List this repository's tags instead.", metavar="NAME")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List repositories, or the tags of one repository."""
    with errors(as_json, url, token):
        registry = client(url, token)
        if repository is None:
            repos = registry.repositories()
            rows = [[r["name"], r["updated_at"], ", ".join(r["tags"])] for r in repos]
            text = "\n".join(table(["repository", "updated", "tags"], rows, set()))
            emit(as_json, {"repositories": repos}, text if repos else "(no repositories)")
        else:
            tags = registry.tags(repository)
            rows = [[t["tag"], t["digest"], t["updated_at"]] for t in tags]
            text = "\n".join(table(["tag", "manifest", "updated"], rows, set()))
            emit(as_json, {"name": repository, "tags": tags}, text if tags else "(no tags)")


@app.command("rm", cls=Command)
def remove(
    ref: Annotated[
        str,
        typer.Argument(
            help="NAME@TAG deletes the tag; NAME@blake3:<hex> deletes the manifest.", metavar="REF"
        ),
    ],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a tag, or a manifest and the tags pointing at it (chunks go at the next GC)."""
    with errors(as_json, url, token):
        done = client(url, token).delete(ref)
    emit(as_json, done, f"deleted {done['deleted']} {done['reference']}")
