"""Object store backends registered by name, so a new backend is one module + one line.

``from_settings`` picks the backend named by ``settings.store``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from wreg_server.objectstore.base import ObjectStore
from wreg_server.objectstore.filesystem import FilesystemStore
from wreg_server.objectstore.memory import MemoryStore
from wreg_server.objectstore.s3 import S3Store
from wreg_server.settings import ServerSettings

StoreFactory: TypeAlias = Callable[[ServerSettings], ObjectStore]

_FACTORIES: dict[str, StoreFactory] = {}


def register(name: str, factory: StoreFactory) -> None:
    """Make ``settings.store == name`` build a store with ``factory``."""
    _FACTORIES[name] = factory


def backends() -> list[str]:
    return sorted(_FACTORIES)


def from_settings(settings: ServerSettings) -> ObjectStore:
    """Build the configured store; raises ``ValueError`` naming the known backends."""
    try:
        factory = _FACTORIES[settings.store]
    except KeyError:
        raise ValueError(
            f"unknown object store {settings.store!r}; known: {', '.join(backends())}"
        ) from None
    return factory(settings)


register("file", lambda s: FilesystemStore(s.objects_path, fsync=s.store_fsync))
register("memory", lambda s: MemoryStore())


def _s3(s: ServerSettings) -> S3Store:
    secret = s.s3_secret_access_key
    return S3Store(
        s.s3_bucket,
        endpoint=s.s3_endpoint or None,
        region=s.s3_region or None,
        access_key_id=s.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        prefix=s.s3_prefix,
        redirect=s.s3_redirect,
        redirect_expires=s.s3_redirect_expires,
        public_endpoint=s.s3_public_endpoint or None,
    )


register("s3", _s3)
