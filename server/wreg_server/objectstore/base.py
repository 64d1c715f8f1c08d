"""The object store interface: keys and bytes, never chunks.

An object store holds immutable-in-practice objects under slash-separated keys. It knows
nothing about digests, encodings or the index; ``domain/layout.py`` decides which key a
chunk gets.

Keys are checked and errors normalised here once (``check_key``, ``failures``) so each
backend only implements the underscore methods and stays small, the way distribution's
``driver/base`` wraps every storage driver. Every public method's failures:

* ``InvalidKey`` — the key is not well formed (any method);
* ``ObjectNotFound`` — ``get`` / ``size`` of a key that does not exist;
* ``presigned_url`` never fails for a missing key: it is an optional capability that
  answers ``None`` unless the backend can hand out direct URLs;
* ``BackendError`` — the backend is broken or unreachable: what its library raised (an
  ``OSError``, an obstore error; the backend's ``failures``), wrapped, the original as
  ``__cause__``. Callers do not guess, and the API answers it as ``503 UNAVAILABLE``
  (``api/middleware.py``).

Anything else is a bug in the store or its caller.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Final

_SEGMENT: Final = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_RE: Final = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
MAX_KEY_LENGTH: Final = 1024
# Calls of one ``put_many`` / ``exists_many`` in flight at once (the default versions).
_MANY_CONCURRENCY: Final = 16


class ObjectStoreError(Exception):
    """Root of the errors an object store raises on purpose."""


class ObjectNotFound(ObjectStoreError, KeyError):
    """No object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object under key {self.key!r}"


class InvalidKey(ObjectStoreError, ValueError):
    """The key is empty, absolute, has empty or dot-leading segments, or odd characters."""


class BackendError(ObjectStoreError, OSError):
    """The backend failed or could not be reached (transient, as far as callers can tell).

    Its message is the backend's own; ``__cause__`` is the original exception. An
    ``OSError`` too, so code that handled the filesystem's I/O errors keeps working.
    """

    def __init__(self, store: str, operation: str, key: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.store = store
        self.operation = operation
        self.key = key


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed object key, else raise ``InvalidKey``.

    Segments may not start with a dot, so backends can keep private entries (a
    filesystem's ``.tmp/`` staging directory) without any key ever colliding with them.
    """
    if len(key) > MAX_KEY_LENGTH or not _KEY_RE.fullmatch(key):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key optionally ending in a slash."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


class ObjectStore(ABC):
    """Async key → bytes store; ``put`` is atomic (a key is never seen half-written)."""

    name: str = "abstract"
    failures: ClassVar[tuple[type[Exception], ...]] = ()
    """What the backend's library raises when the backend fails or cannot be reached; the
    public methods raise these as ``BackendError``. A backend's own ``ObjectStoreError``s
    (``ObjectNotFound``) pass through unchanged."""

    @contextmanager
    def _translated(self, operation: str, key: str) -> Iterator[None]:
        """Raise the backend's ``failures`` inside the block as ``BackendError``."""
        try:
            yield
        except ObjectStoreError:
            raise
        except self.failures as exc:
            raise BackendError(self.name, operation, key, exc) from exc

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""
        key = check_key(key)
        with self._translated("put", key):
            await self._put(key, data)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """``put`` each ``(key, data)``: each put atomic, in no particular order, and a
        failure may leave some of them stored (as separate puts would). For batches of
        small objects, where a call per object costs more than its bytes; the default
        runs ``put``s concurrently, a backend may do better."""
        checked = [(check_key(key), data) for key, data in items]
        if checked:
            with self._translated("put", checked[0][0]):
                await self._put_many(checked)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """``exists`` of each key, in order (see ``put_many``)."""
        checked = [check_key(key) for key in keys]
        if not checked:
            return []
        with self._translated("exists", checked[0]):
            return await self._exists_many(checked)

    async def _put_many(self, items: list[tuple[str, bytes]]) -> None:
        slots = asyncio.Semaphore(_MANY_CONCURRENCY)

        async def one(key: str, data: bytes) -> None:
            async with slots:
                await self._put(key, data)

        await asyncio.gather(*(one(key, data) for key, data in items))

    async def _exists_many(self, keys: list[str]) -> list[bool]:
        slots = asyncio.Semaphore(_MANY_CONCURRENCY)

        async def one(key: str) -> bool:
            async with slots:
                return await self._exists(key)

        return list(await asyncio.gather(*(one(key) for key in keys)))

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises ``ObjectNotFound``."""
        key = check_key(key)
        with self._translated("get", key):
            return await self._get(key)

    async def exists(self, key: str) -> bool:
        key = check_key(key)
        with self._translated("exists", key):
            return await self._exists(key)

    async def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``; raises ``ObjectNotFound``."""
        key = check_key(key)
        with self._translated("size", key):
            return await self._size(key)

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (GC may race itself)."""
        key = check_key(key)
        with self._translated("delete", key):
            await self._delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key that starts with ``prefix`` (plain string prefix), in sorted order."""
        return self._listing(check_prefix(prefix))

    async def _listing(self, prefix: str) -> AsyncIterator[str]:
        with self._translated("list", prefix):
            async for key in self._list(prefix):
                yield key

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` if this store keeps objects as local files, else None.

        Optional capability, used to serve downloads with the OS's file path (sendfile
        where the ASGI server supports it) instead of reading objects into memory. The
        file may vanish at any moment (GC): callers must handle ``FileNotFoundError``.
        """
        check_key(key)
        return None

    async def presigned_url(self, key: str) -> str | None:
        """A URL from which a client may GET ``key`` directly, bypassing the server.

        Optional capability: ``None`` (the default) means "serve the bytes yourself". A
        backend that returns a URL (S3 with redirects on) makes it expire soon, and does not
        check that the object exists — fetching a missing one fails at the URL's host.
        """
        key = check_key(key)
        with self._translated("presigned_url", key):
            return await self._presigned_url(key)

    async def _presigned_url(self, key: str) -> str | None:
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections or handles; the default has none."""

    @abstractmethod
    async def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    async def _get(self, key: str) -> bytes: ...

    @abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abstractmethod
    async def _size(self, key: str) -> int: ...

    @abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> AsyncIterator[str]: ...
