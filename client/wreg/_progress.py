"""A minimal progress protocol: the library reports bytes, the CLI draws bars."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: int) -> None:
        """A new phase begins with ``total`` bytes to process."""

    def advance(self, amount: int) -> None:
        """``amount`` more bytes of the current phase are done."""


class NoProgress:
    """Progress that reports nowhere (library default, ``--json``, pipes)."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass
