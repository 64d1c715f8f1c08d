"""Object storage behind one small interface (see ``base``): keys and bytes, never chunks.

Which key a chunk gets is the domain's business (``domain/layout.py``); nothing here
imports ``wreg.core`` or any other part of the server but ``settings``.

Backends: ``filesystem`` (default), ``s3`` (S3-compatible services), ``memory`` (tests).
"""

from wreg_server.objectstore.base import (
    BackendError,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
)
from wreg_server.objectstore.factory import backends, from_settings, register
from wreg_server.objectstore.filesystem import FilesystemStore
from wreg_server.objectstore.memory import MemoryStore
from wreg_server.objectstore.s3 import S3Store

__all__ = [
    "BackendError",
    "FilesystemStore",
    "InvalidKey",
    "MemoryStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3Store",
    "backends",
    "from_settings",
    "register",
]
