"""The ``wreg`` command: a thin layer over ``wreg.Client``, one module per command group."""

from wreg.cli import transfer as _transfer  # noqa: F401 - registers the commands
from wreg.cli._common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
