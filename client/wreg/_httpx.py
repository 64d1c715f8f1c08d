"""httpx, imported without its command-line tool.

``import httpx`` also imports ``httpx._main`` (the ``httpx`` command: click, rich and
pygments, ~70 ms, a third of a warm pull's start-up) whenever click is installed, as it
is next to the server. A ``None`` entry in ``sys.modules`` makes that optional import fail
at once, as it does where click is missing, and httpx falls back to a stub ``main``. Only
the ``httpx`` command is lost in this process; the client never runs it.
"""

from __future__ import annotations

import sys

if "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]

import httpx  # after the entry above, on purpose

__all__ = ["httpx"]
