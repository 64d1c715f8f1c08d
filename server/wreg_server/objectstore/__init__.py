"""Object storage behind one small interface (see ``base``); the layout lives in ``layout``.

Backends: ``filesystem`` (default), ``s3`` (S3-compatible services), ``memory`` (tests).
"""

from wreg_server.objectstore.base import InvalidKey, ObjectNotFound, ObjectStore, ObjectStoreError
from wreg_server.objectstore.factory import backends, from_settings, register
from wreg_server.objectstore.filesystem import FilesystemStore
from wreg_server.objectstore.layout import chunk_key
from wreg_server.objectstore.memory import MemoryStore
from wreg_server.objectstore.s3 import S3Store

__all__ = [
    "FilesystemStore",
    "InvalidKey",
    "MemoryStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3Store",
    "backends",
    "chunk_key",
    "from_settings",
    "register",
]
