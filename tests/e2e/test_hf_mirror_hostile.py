"""A hostile upstream hub: the mirror bounds and checks everything it declares, and
commits nothing it could not verify."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.e2e.test_hf_api import hf_call
from wreg.testing.servers import RunningServer, start_server
from wreg.testing.webapps import start_app

COMMIT = "c0ffee" + "0" * 34
GOOD = b"honest bytes\n" * 1000


def tree_for(case: str) -> list[dict[str, Any]]:
    sha = hashlib.sha256(GOOD).hexdigest()
    entry: dict[str, Any] = {"type": "file", "path": "model.bin", "size": len(GOOD), "oid": "x"}
    entry["lfs"] = {"oid": sha, "size": len(GOOD), "pointerSize": 134}
    if case == "traversal":
        entry["path"] = "../../etc/passwd"
    elif case == "short":
        entry["size"] = len(GOOD) + 10  # declares more than it sends
    elif case == "long":
        entry["size"] = len(GOOD) - 10  # sends more than it declares
    elif case == "sha":
        entry["lfs"]["oid"] = "0" * 64
    elif case == "huge":
        entry["size"] = 1 << 50
    return [entry]


class Upstream:
    """An HF-compatible fake: repository ``evil/<case>`` misbehaves as ``case`` says."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()

        async def info(request: web.Request) -> web.Response:
            self.requests.append(request.path)
            return web.json_response({"id": request.match_info["repo"], "sha": COMMIT})

        async def tree(request: web.Request) -> web.Response:
            self.requests.append(request.path)
            return web.json_response(tree_for(request.match_info["case"]))

        async def resolve(request: web.Request) -> web.Response:
            self.requests.append(request.path)
            return web.Response(body=GOOD)

        app = web.Application()
        app.router.add_get("/api/models/{repo:evil/[a-z]+}/revision/{rev}", info)
        app.router.add_get("/api/models/evil/{case}/tree/{rev}", tree)
        app.router.add_get("/evil/{case}/resolve/{rev}/{path:.*}", resolve)
        runner, port = await start_app(app)
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Upstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def mirror(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"WREG_UPSTREAM_HF": upstream.url, "WREG_UPSTREAM_HF_MAX_BYTES": str(1 << 30)}
    running = start_server(tmp_path_factory.mktemp("mirror") / "data", env)
    yield running
    running.stop()


@pytest.mark.parametrize("case", ["traversal", "short", "long", "sha", "huge"])
def test_hostile_upstream_is_refused(mirror: RunningServer, case: str, tmp_path: Path) -> None:
    r = httpx.get(f"{mirror.url}/api/models/evil/{case}", timeout=60)
    assert r.status_code in (413, 502), r.text
    assert r.json()["error"]
    # Nothing was committed, and the spool is empty again.
    assert httpx.get(f"{mirror.url}/v1/repositories/evil/{case}/tags").status_code == 404
    spool = mirror.data / "tmp"
    assert not spool.exists() or not any(spool.iterdir())


def test_honest_upstream_is_mirrored(mirror: RunningServer, tmp_path: Path) -> None:
    out = hf_call(mirror.url, "out = {'p': hh.hf_hub_download('evil/fine', 'model.bin')}", tmp_path)
    assert "error" not in out, out
    assert Path(out["p"]).read_bytes() == GOOD
