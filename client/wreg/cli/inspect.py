"""Looking inside models without downloading them: ``inspect`` and ``diff``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

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
    table,
)

MAX_LISTED = 200
"""Names listed per section of a ``diff`` table (``--json`` has them all)."""


def _count(n: int) -> str:
    """A parameter count people read: 1.2B, 350.0M, 12.3K."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render_inspect(doc: dict[str, Any], tensors: bool) -> str:
    """The readable form of a description: summary, files, tensors, metadata."""
    totals = doc["totals"]
    by = f" by {doc['pushed_by']}" if doc["pushed_by"] else ""
    out = [
        f"{doc['name']} {doc['digest']}",
        f"  pushed {doc['created_at'] or '?'}{by}; "
        f"{totals['files']} files, {human_size(totals['bytes'])}, "
        f"{totals['tensors']} tensors, {_count(totals['parameters'])} parameters",
        "",
    ]
    rows = [
        [
            f["path"],
            f["format"] or "-",
            human_size(f["size"]),
            str(len(f["tensors"])) if f["format"] else "-",
            _count(f["parameters"]) if f["format"] else "-",
        ]
        for f in doc["files"]
    ]
    out += table(["path", "format", "size", "tensors", "params"], rows, {2, 3, 4})
    for f in doc["files"]:
        if f.get("error"):
            out.append(f"  {f['path']}: {f['error']}")
    if doc["metadata"]:
        out += ["", "metadata:", *(f"  {k}: {v}" for k, v in sorted(doc["metadata"].items()))]
    for f in doc["files"]:
        if f["metadata"]:
            out += ["", f"{f['path']} metadata:"]
            out += [f"  {k}: {_short(v)}" for k, v in sorted(f["metadata"].items())]
        if tensors and f["tensors"]:
            out += ["", f"{f['path']}:"]
            rows = [
                [
                    t["name"],
                    t["dtype"],
                    _shape(t["shape"]),
                    human_size(t["nbytes"]),
                    _count(t["parameters"]),
                ]
                for t in f["tensors"]
            ]
            out += table(["name", "dtype", "shape", "bytes", "params"], rows, {3, 4})
    return "\n".join(out)


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(title: str, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    shown = [f"  {n}" for n in names[:MAX_LISTED]]
    more = [f"  … and {len(names) - MAX_LISTED} more"] if len(names) > MAX_LISTED else []
    return [f"{title} ({len(names)}):", *shown, *more]


def render_diff(doc: dict[str, Any]) -> str:
    """The readable form of a diff: summary line, then what was added, removed, changed."""
    files, counts = doc["files"], doc["tensors"]
    total = doc["bytes_total"]
    share = f" ({100 * doc['bytes_shared'] / total:.1f}%)" if total else ""
    out = [
        f"{doc['a']['reference']} -> {doc['b']['reference']}: "
        f"files +{len(files['added'])} -{len(files['removed'])} ~{len(files['changed'])} "
        f"={len(files['unchanged'])}; tensors +{counts['added']} -{counts['removed']} "
        f"~{counts['changed']} ={counts['unchanged']}",
        f"  bytes: {human_size(total)} total, {human_size(doc['bytes_shared'])} shared{share}, "
        f"{human_size(doc['bytes_new'])} new",
    ]
    out += _names("files added", files["added"])
    out += _names("files removed", files["removed"])
    for f in files["changed"]:
        t = f["tensors"]
        out.append(
            f"file changed: {f['path']} ({human_size(f['size'][0])} -> {human_size(f['size'][1])}; "
            f"tensors +{len(t['added'])} -{len(t['removed'])} ~{len(t['changed'])} "
            f"={t['unchanged']})"
        )
        out += [f"  {line}" for line in _names("added", t["added"])]
        out += [f"  {line}" for line in _names("removed", t["removed"])]
        changed = [f"{c['name']} ({', '.join(c['changes'])})" for c in t["changed"]]
        out += [f"  {line}" for line in _names("changed", changed)]
    return "\n".join(out)


@app.command("inspect", cls=Command)
def inspect(
    ref: Annotated[str, typer.Argument(help="NAME[@TAG|@blake3:<hex>].", metavar="REF")],
    tensors: Annotated[
        bool, typer.Option("--tensors/--no-tensors", help="List every tensor of every file.")
    ] = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's files, tensors and metadata; no tensor bytes are downloaded."""
    with errors(as_json, url, token):
        doc = client(url, token).inspect(ref)
    if as_json and not tensors:
        doc = {**doc, "files": [{**f, "tensors": []} for f in doc["files"]]}
    emit(as_json, doc, "" if as_json else render_inspect(doc, tensors))


@app.command("diff", cls=Command)
def diff(
    ref_a: Annotated[str, typer.Argument(help="The older version.", metavar="A")],
    ref_b: Annotated[str, typer.Argument(help="The newer version.", metavar="B")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two versions: files and tensors added, removed, changed; bytes shared."""
    with errors(as_json, url, token):
        doc = client(url, token).diff(ref_a, ref_b)
    emit(as_json, doc, "" if as_json else render_diff(doc))
