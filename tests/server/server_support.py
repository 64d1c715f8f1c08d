"""Helpers for the server tests: a real uvicorn server in a thread, and request builders.

Processes of their own (``wreg-server serve``, moto, PostgreSQL) start through
``wreg.testing`` (``procs``, ``servers``), which the benchmarks share.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy.engine import Connection

from wreg.core.digest import digest_bytes
from wreg.core.encoding import encode_chunk
from wreg.core.manifest import ChunkRef, FileEntry, Manifest, canonical_json
from wreg.testing.procs import free_port
from wreg_server.db.models import Base
from wreg_server.db.session import create_engine
from wreg_server.domain.layout import CHUNKS_PREFIX
from wreg_server.objectstore import ObjectStore, from_settings
from wreg_server.settings import ServerSettings

KiB = 1024
T = TypeVar("T")

# Small limits so "too large" is cheap to provoke over a real socket.
TEST_LIMITS: dict[str, Any] = {
    "max_chunk_raw": 256 * KiB,
    "max_chunk_encoded": 256 * KiB + 1 * KiB,
    "max_manifest_bytes": 64 * KiB,
    "max_json_body": 16 * KiB,
    "max_missing_query": 100,
}


def make_settings(data: Path, **overrides: Any) -> ServerSettings:
    return ServerSettings(data=data, store_fsync=False, **{**TEST_LIMITS, **overrides})


def with_store(settings: ServerSettings, action: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """Run ``action`` on a fresh handle to the object store ``settings`` names.

    The store-agnostic way for a test to look behind the API (list, delete or overwrite
    objects) whichever backend the ``settings`` fixture chose. Runs in a thread of its
    own, so it works from sync tests and from inside a running event loop alike.
    """

    async def main() -> T:
        store = from_settings(settings)
        try:
            return await action(store)
        finally:
            await store.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def stored_chunks(settings: ServerSettings) -> list[str]:
    """The hex digests of every chunk object in the store, sorted."""

    async def names(store: ObjectStore) -> list[str]:
        return sorted([key.rsplit("/", 1)[1] async for key in store.list(CHUNKS_PREFIX)])

    return with_store(settings, names)


def schema_drift(url: str) -> list[object]:
    """How the database at ``url`` differs from what the models declare (types included);
    empty when the migrations and the models agree."""

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def main() -> list[object]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(diff)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@contextmanager
def running(app: FastAPI, **config: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free local port in a thread; yields the base URL.

    ``config``: more ``uvicorn.Config`` arguments (``http=`` a protocol class, TLS files:
    the URL is then ``https://``)."""
    settings = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", log_config=None, **config
    )
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    scheme = "https" if "ssl_certfile" in config else "http"
    try:
        yield f"{scheme}://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Chunk:
    raw: bytes
    digest: str
    encoded: bytes

    @classmethod
    def of(cls, raw: bytes, dtype: str | None = None) -> Chunk:
        return cls(raw, digest_bytes(raw), encode_chunk(raw, dtype))

    @property
    def ref(self) -> ChunkRef:
        return ChunkRef(self.digest, len(self.raw))


def file_of(path: str, *chunks: Chunk, mode: int = 0o644) -> FileEntry:
    return FileEntry.of(path, tuple(c.ref for c in chunks), mode)


def raw_manifest(files: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bytes:
    """Canonical bytes of a manifest document built by hand (to get past client checks)."""
    return canonical_json({"schema": 1, "files": files, "metadata": metadata or {}})


def file_doc(path: str, chunk: Chunk) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(chunk.raw),
        "digest": digest_bytes(chunk.raw),
        "mode": 0o644,
        "chunks": [{"digest": chunk.digest, "size": len(chunk.raw)}],
    }


class Api:
    """An httpx client plus shortcuts for the common multi-step setups.

    ``with Api(url) as api:`` closes its connections at the end of the block.
    """

    def __init__(self, base_url: str, repository: str = "test/chunks") -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.repository = repository  # chunks go through it unless told otherwise

    def chunks(self, repository: str | None = None) -> str:
        """The chunk routes of ``repository`` (default: this client's)."""
        return f"/v1/repositories/{repository or self.repository}/chunks"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(self, chunk: Chunk, repository: str | None = None) -> httpx.Response:
        """Upload through ``repository`` (default: this client's)."""
        response = self.http.put(f"{self.chunks(repository)}/{chunk.digest}", content=chunk.encoded)
        assert response.status_code in (200, 201), response.text
        return response

    def commit(
        self, name: str, manifest: Manifest | bytes, tag: str | None = None
    ) -> httpx.Response:
        body = manifest if isinstance(manifest, bytes) else manifest.to_json_bytes()
        params = {"tag": tag} if tag is not None else {}
        return self.http.put(
            f"/v1/repositories/{name}/manifests/{digest_bytes(body)}", content=body, params=params
        )

    def reference(self, *chunks: Chunk, repository: str | None = None) -> Manifest:
        """Commit a manifest of ``repository`` (default: this client's) holding each of
        ``chunks`` (uploaded already) as one file, so they become readable through it."""
        manifest = Manifest.build([file_of(f"f{i}.bin", c) for i, c in enumerate(chunks)])
        response = self.commit(repository or self.repository, manifest, "latest")
        assert response.status_code in (200, 201), response.text
        return manifest

    def push(self, name: str, *files: tuple[str, bytes], tag: str | None = "latest") -> Manifest:
        """Upload each file as one chunk and commit a manifest of them."""
        entries = []
        for path, data in files:
            chunk = Chunk.of(data)
            self.upload(chunk, name)
            entries.append(file_of(path, chunk))
        manifest = Manifest.build(entries)
        response = self.commit(name, manifest, tag)
        assert response.status_code in (200, 201), response.text
        return manifest


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The single error of an error response, checking the envelope on the way."""
    body = response.json()
    assert set(body) == {"errors"}, body
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert set(error) == {"code", "message", "detail"}, error
    assert response.headers.get("x-request-id")
    return error


def allowed_methods(response: httpx.Response) -> list[str]:
    """The methods a 405's ``Allow`` header lists, sorted, repeats kept (so an exact
    comparison catches a method listed twice as well as one too many or too few)."""
    return sorted(m.strip() for m in response.headers["allow"].split(","))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    error = error_of(response)
    assert error["code"] == code, error
    return error
