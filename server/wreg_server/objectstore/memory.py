"""In-memory object store: for tests and throwaway servers; everything dies with the process."""

from __future__ import annotations

from collections.abc import AsyncIterator

from wreg_server.objectstore.base import ObjectNotFound, ObjectStore


class MemoryStore(ObjectStore):
    """A dict. ``put`` is atomic because the event loop runs one coroutine at a time."""

    name = "memory"

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}

    async def _put(self, key: str, data: bytes) -> None:
        self._objects[key] = bytes(data)

    async def _get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def _exists(self, key: str) -> bool:
        return key in self._objects

    async def _size(self, key: str) -> int:
        return len(await self._get(key))

    async def _delete(self, key: str) -> None:
        self._objects.pop(key, None)

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            yield key
