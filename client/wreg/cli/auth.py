"""Credentials: ``login`` and ``logout``.

``wreg login`` checks the token against the registry (``GET /v1/tokens/self``) before
saving it, so a typo is caught now rather than at the next push.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from wreg.cli._common import Command, JsonOpt, UrlOpt, app, client, emit, errors, fail
from wreg.core.errors import ErrorCode


def _read_token() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("token: ").strip()
    return sys.stdin.readline().strip()


@app.command(cls=Command)
def login(
    url: UrlOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="The token (from 'wreg-server token create'); default: read from stdin, "
            "or prompted for on a terminal.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a token against the registry and store it for that registry (file mode 0600)."""
    from wreg._credentials import save_token

    with errors(as_json, url):
        secret = token if token is not None else _read_token()
        if not secret:
            fail(ErrorCode.USAGE_INVALID.error("no token given (--token, or on stdin)"), as_json)
        registry = client(url, secret)
        me = registry.whoami()  # a token the registry refuses raises here: nothing saved
        path = save_token(registry.url, secret)
    scopes = " ".join(me.get("scopes") or [])
    text = f"logged in to {registry.url} as {me.get('name')!r} ({scopes}); token saved in {path}"
    if not me.get("auth"):
        text = f"saved the token for {registry.url} in {path} (the registry has auth off)"
    emit(
        as_json,
        {
            "url": registry.url,
            "name": me.get("name"),
            "scopes": me.get("scopes"),
            "auth": me.get("auth"),
        },
        text,
    )


@app.command(cls=Command)
def logout(url: UrlOpt = None) -> None:
    """Forget the token stored for the registry."""
    from wreg._config import ClientSettings, registry_root
    from wreg._credentials import remove_token

    with errors():
        if url:
            target = registry_root(url, "--url/WREG_URL")
        else:
            target = ClientSettings.from_env().url.rstrip("/")
        removed = remove_token(target)
    typer.echo(f"logged out of {target}" if removed else f"no token stored for {target}")
