"""``wreg-server``: run the registry, manage its index.

    wreg-server serve [--data DIR] [--host 127.0.0.1] [--port 8080]
    wreg-server db upgrade [--data DIR]

Options not given fall back to ``WREG_*`` environment variables (see ``settings.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wreg_server.settings import ServerSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Manage the index database.")
app.add_typer(db_app, name="db")

DataOption = Annotated[
    Path | None, typer.Option("--data", help="data directory (default $WREG_DATA or ./wreg-data)")
]


def _settings(data: Path | None) -> ServerSettings:
    overrides: dict[str, Any] = {} if data is None else {"data": data}
    return ServerSettings(**overrides)


@app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the registry API."""
    import uvicorn

    from wreg_server.app import create_app

    uvicorn.run(create_app(_settings(data)), host=host, port=port, log_level=log_level)


@db_app.command("upgrade")
def db_upgrade(data: DataOption = None) -> None:
    """Apply every pending migration to the index database."""
    from wreg_server.db.migrate import upgrade

    settings = _settings(data)
    upgrade(settings.database_url)
    typer.echo("index is up to date")


def main() -> None:
    app()
