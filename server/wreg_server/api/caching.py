"""The ``Cache-Control`` values routes send, in one place (routes do not import each other).

* ``immutable(settings)`` — content named by its digest (a chunk, a manifest fetched by
  digest): it never changes, so a cache may keep it for a year. ``public`` only when
  anyone may read it (auth off, or anonymous pull on); with auth on it is ``private``:
  a shared cache in front (nginx ``proxy_cache``, a CDN) must not hand a repository's
  weights to a client that has no token. An auth-aware cache (README, "Deployment")
  checks the token itself and may then ignore ``private``;
* ``revalidate(settings)`` — something a name points at (a manifest fetched by tag): a
  cache may keep it but must ask again (``If-None-Match``) before reusing it;
* ``NO_STORE`` — mutable answers (tag lists, repository listings) and redirects to
  presigned object-store URLs, which expire soon. Routers whose every answer is mutable
  (tags, repositories, tokens) take ``no_store`` as a router dependency.
"""

from __future__ import annotations

from typing import Final

from fastapi import Response

from wreg_server.settings import ServerSettings

YEAR: Final = 31536000
NO_STORE: Final = "no-store"


def _audience(settings: ServerSettings) -> str:
    return "private" if settings.auth_enabled and not settings.anonymous_pull else "public"


def immutable(settings: ServerSettings) -> str:
    return f"{_audience(settings)}, max-age={YEAR}, immutable"


def revalidate(settings: ServerSettings) -> str:
    return f"{_audience(settings)}, no-cache"


def no_store(response: Response) -> None:
    """Router dependency: ``Cache-Control: no-store`` on every answer a route returns as a
    model (a route that builds its own ``Response`` sets its own headers)."""
    response.headers["Cache-Control"] = NO_STORE
