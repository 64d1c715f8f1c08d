"""The web UI: read-only, server-rendered pages under ``/ui`` (``routes.py``).

    /ui                      repositories the viewer may pull (search, sizes)
    /ui/repository?name=     one repository's tags, paged (keyset), prefix search
    /ui/manifest?name=&ref=  a manifest: files, tensors, who pushed it when; a diff
    /ui/storage              logical vs stored bytes: dedupe and compression savings
    /ui/login, /ui/logout    the token cookie (POSTs with a CSRF check)

The pages authenticate with the ``wreg_ui`` cookie only; the JSON API never reads it
(``auth/guard.py`` reads the Authorization header alone), so a cookie a browser sends
along on its own carries no power there.
"""

from wreg_server.ui.routes import router

__all__ = ["router"]
