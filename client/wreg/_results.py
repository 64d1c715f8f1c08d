"""What push and pull report (the CLI's ``--json`` prints these objects)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PushResult:
    reference: str
    manifest: str
    files: int
    bytes_total: int
    """Raw bytes of all files."""
    bytes_new: int
    """Raw bytes of the chunks the registry lacked."""
    bytes_sent: int
    """Encoded chunk bytes sent on the wire."""
    chunks_total: int
    chunks_new: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PullResult:
    reference: str
    manifest: str
    path: str
    """Where the model's files are: ``-o DIR``, or the cache snapshot."""
    files: int
    bytes_total: int
    bytes_downloaded: int
    """Encoded chunk bytes received on the wire."""
    bytes_from_cache: int
    """Raw bytes taken from the node cache instead of the network."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
