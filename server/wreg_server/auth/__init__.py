"""Bearer-token authentication and scope checks.

    scopes.py  ``action:glob`` scopes and the ``Principal`` a request acts as
    tokens.py  tokens in the index: create, verify, revoke, list (stored as SHA-256)
    guard.py   the one FastAPI dependency, applied app-wide, that validates path
               parameters, maps method + route to the scope a request needs and answers
               401/403 before any route code runs

With ``WREG_AUTH=off`` (the default, for the quickstart on 127.0.0.1) every request acts
as an unrestricted principal; path parameters are validated either way. This package
reaches the app's settings and index through ``wreg_server.context``, never ``api``.
"""

from wreg_server.auth.scopes import ACTIONS, Principal, Scope, parse_scope

__all__ = ["ACTIONS", "Principal", "Scope", "parse_scope"]
