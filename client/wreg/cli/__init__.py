"""The ``wreg`` command: a thin layer over ``wreg.Client``, one module per command group."""

import sys

from wreg.cli import auth as _auth  # noqa: F401 - registers the commands
from wreg.cli import cache as _cache
from wreg.cli import inspect as _inspect  # noqa: F401 - registers the commands
from wreg.cli import transfer as _transfer  # noqa: F401 - registers the commands
from wreg.cli._common import app, run

app.add_typer(_cache.app, name="cache")


def main() -> None:
    sys.exit(run())


__all__ = ["app", "main"]
