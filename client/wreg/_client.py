"""The Python SDK: ``wreg.Client(url, token).push(path, ref)`` / ``.pull(ref, dest)``."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wreg import _pull, _push
from wreg._cache import opened_cache
from wreg._config import ClientSettings
from wreg._http import Registry
from wreg._progress import NoProgress, Progress
from wreg._results import PullResult, PushResult
from wreg.core.reference import Reference, validate_name


class Client:
    """A registry client. Arguments left out come from ``WREG_*`` environment settings."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        settings = ClientSettings()
        self.url = (url or settings.url).rstrip("/")
        self.token = token if token is not None else settings.token
        self.cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache
        self.concurrency = concurrency or settings.concurrency
        self.timeout = settings.timeout

    def _registry(self) -> Registry:
        return Registry(self.url, self.token, self.concurrency, self.timeout)

    def _executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))

    # -- push / pull -------------------------------------------------------------

    def push(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> PushResult:
        """Upload the directory ``path`` as ``ref`` (default: ``<dirname>@latest``)."""
        return asyncio.run(self.apush(path, ref, progress=progress))

    async def apush(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> PushResult:
        root = Path(path)
        parsed = Reference.parse(ref) if ref else _push.default_reference(root)
        with self._executor() as executor:
            async with self._registry() as registry:
                return await _push.push(
                    registry, root, parsed, executor, progress or NoProgress(), self.concurrency
                )

    def pull(
        self,
        ref: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> PullResult:
        """Fetch ``ref`` into the node cache; with ``dest``, also materialise it there."""
        return asyncio.run(self.apull(ref, dest, progress=progress))

    async def apull(
        self,
        ref: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> PullResult:
        parsed = Reference.parse(ref)
        with self._executor() as executor, opened_cache(self.cache_dir) as cache:
            async with self._registry() as registry:
                return await _pull.pull(
                    registry,
                    cache,
                    parsed,
                    Path(dest) if dest is not None else None,
                    executor,
                    progress or NoProgress(),
                    self.concurrency,
                )

    # -- listing -----------------------------------------------------------------

    def repositories(self) -> list[dict[str, Any]]:
        """Every repository with its tag count and last update."""

        async def go() -> list[dict[str, Any]]:
            async with self._registry() as r:
                doc = await r.get_json("/v1/repositories", "repository listing")
                return list(doc["repositories"])

        return asyncio.run(go())

    def tags(self, name: str) -> list[dict[str, Any]]:
        """The tags of repository ``name`` with the manifest each points at."""
        validate_name(name)

        async def go() -> list[dict[str, Any]]:
            async with self._registry() as r:
                doc = await r.get_json(f"/v1/repositories/{name}/tags", f"tags of {name}")
                return list(doc["tags"])

        return asyncio.run(go())
