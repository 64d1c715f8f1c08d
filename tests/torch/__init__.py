"""The torch suite: run in .venv-torch by ``make test-torch`` (and ``make test``)."""
