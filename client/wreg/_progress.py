"""A minimal progress protocol: the library reports bytes, the CLI draws bars.

An operation goes through phases, one at a time; each ``start`` ends the one before. The
advances of a phase add up to its total, never more, and come as the work is done (per
chunk, or per few MiB hashed), so a bar over a multi-GB file moves and its rate and time
left can be estimated. The phases, with what their bytes are:

- ``hashing``: the bytes of the files a push reads and hashes (a file the stat cache
  knows is not read, and not counted);
- ``uploading``: the raw (not yet compressed) bytes of the chunks the registry lacks; a
  push with nothing to send has no such phase (``re-uploading``: chunks removed by
  garbage collection during the push, sent again);
- ``downloading`` (pull) and ``loading`` (tensor loading): the bytes of the files to
  assemble, each chunk counted once per place it is written to, whether fetched, copied
  from the node cache or kept from an interrupted pull, or the whole file when another
  process assembled it meanwhile. A load of some tensors only ends short of its total
  (which chunks it needs is known only as it reads the headers).

Every call is made on the thread running the operation's event loop, never at the same
time as another.
"""

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
