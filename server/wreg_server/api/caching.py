"""The ``Cache-Control`` values routes send, in one place (routes do not import each other).

* ``IMMUTABLE`` — content named by its digest (a chunk, a manifest fetched by digest):
  it never changes, so any HTTP cache or CDN may keep it for a year;
* ``REVALIDATE`` — something a name points at (a manifest fetched by tag): a cache may
  keep it but must ask again before reusing it, since the tag can move;
* ``NO_STORE`` — a redirect to a presigned object-store URL, which expires soon: a cache
  that kept it would hand out a dead link.
"""

from __future__ import annotations

from typing import Final

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
NO_STORE: Final = "no-store"
