"""An aiohttp app served in this process on a free local port (fake registries, stores,
proxies in tests). One place reads the port the kernel chose::

    runner, port = await start_app(app)
    try:
        ...  # http://127.0.0.1:{port}
    finally:
        await runner.cleanup()
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from wreg.core.digest import DIGEST_PATTERN
from wreg.testing.procs import LOCALHOST

# A chunk URL: /v1/repositories/{name}/chunks/{digest} (or /v1/chunks/{digest}, global).
_CHUNK_PATH: Final = re.compile(rf"/v1/(?:repositories/.+/)?chunks/({DIGEST_PATTERN})")
CHUNK_ROUTE: Final = "/v1/repositories/{name:.+}/chunks/{digest}"
"""The chunk route of a fake registry (aiohttp syntax)."""


def chunk_digest(path: str) -> str | None:
    """The digest a chunk URL path names, else None (a proxy telling chunk requests apart)."""
    found = _CHUNK_PATH.fullmatch(path)
    return found.group(1) if found is not None else None


async def start_app(
    app: web.Application, host: str = LOCALHOST, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host``, on a port the kernel picks when binding (so no other
    process can take it first); returns the runner, to ``cleanup()``, and the port."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    port: int = runner.addresses[0][1]
    return runner, port
