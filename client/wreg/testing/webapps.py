"""An aiohttp app served in this process on a free local port (fake registries, stores,
proxies in tests). One place reads the port the kernel chose::

    runner, port = await start_app(app)
    try:
        ...  # http://127.0.0.1:{port}
    finally:
        await runner.cleanup()
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wreg.testing.procs import LOCALHOST


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
