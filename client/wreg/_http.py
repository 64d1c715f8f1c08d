"""Talking to the registry: httpx for control calls, threads for chunk downloads.

Chunk downloads, the pull's data path, are blocking ``http.client`` reads straight into
reused buffers in fetch threads (``ChunkReader``): the socket reads run outside the GIL,
so they scale with cores, and cost the least CPU per GB of the engines measured
(``bench/http_engines.py``: aiohttp, pycurl, obstore, threads); so are batched
downloads. Uploads use aiohttp; the few JSON calls per push or pull use httpx. Every
failure is mapped in one place to the ``wreg.core.errors`` hierarchy, carrying the
server's code, message and request id. Transient failures (connection errors, 429,
5xx) are retried with backoff; permanent ones (4xx, digest mismatch) never are.

Small chunks travel in batches (``fetch_chunks_into``, ``put_chunks``: many chunks per
request, framed as ``wreg.core.batch`` says), since for them per-request overhead, not
bytes, is the cost. A registry without the batched routes (an older server answers 405,
or a proxy 404 without our error code) is remembered (``batches``), and callers fall back
to one request per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import os
import random
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import urljoin, urlsplit

from wreg._httpx import httpx
from wreg.core import batch
from wreg.core.digest import PREFIX
from wreg.core.errors import ErrorCode, NotFound, WregError
from wreg.core.mediatypes import (
    CHUNK_FRAMES_MEDIA_TYPE,
    CHUNK_MEDIA_TYPE,
    LARGE_BATCHES_HEADER,
    MANIFEST_MEDIA_TYPE,
)
from wreg.core.reference import Reference
from wreg.core.sizes import (
    MAX_BATCH_CHUNKS,
    MAX_CHUNK_ENCODED,
    MAX_MANIFEST_BYTES,
    MAX_MISSING_QUERY,
)

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

T = TypeVar("T")
_RETRY_STATUSES: Final = {429, 500, 502, 503, 504}
ATTEMPTS: Final = 4
_BACKOFF: Final = 0.25
# The two fields of an S3 XML error body we show (parsed leniently: it is only a message).
_S3_CODE: Final = re.compile(r"<Code>([^<]{1,100})</Code>")
_S3_MESSAGE: Final = re.compile(r"<Message>([^<]{1,300})</Message>")


class BatchesUnsupported(Exception):
    """Internal: the registry has no batched chunk routes; send one chunk per request."""


class BatchTooLarge(Exception):
    """Internal: a batch answer would overflow its buffer; fetch its chunks one by one."""


class _Retryable(Exception):
    """Internal: a transient failure worth another attempt."""

    def __init__(self, error: WregError) -> None:
        self.error = error


def http_error(status: int, body: bytes, request_id: str | None, what: str) -> WregError:
    """The one place an HTTP error answer becomes an exception.

    The code named in the error envelope picks the exception class by table lookup
    (``ErrorCode.from_wire``); an answer without one of our codes (a proxy, a CDN, an
    old server) maps by its status through the same table.
    """
    try:
        first = json.loads(body)["errors"][0]
        name, message, detail = str(first["code"]), str(first["message"]), first.get("detail")
    except (ValueError, KeyError, IndexError, TypeError):
        name, message, detail = "", f"{what}: HTTP {status}", None
    code = ErrorCode.from_wire(name, status)
    return code.error(message, detail=detail, request_id=request_id)


def _fail(error: WregError, status: int) -> NoReturn:
    """Raise ``error``, marked for another attempt when it is transient."""
    if status in _RETRY_STATUSES or error.retryable:
        raise _Retryable(error)
    raise error


# An error answer worth showing fits in far less; the rest of a longer one is dropped.
_ERROR_BODY_LIMIT: Final = 64 * 1024


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The streamed body, or None as soon as it passes ``limit`` bytes (read no further)."""
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int = ATTEMPTS) -> T:
    for attempt in range(attempts):
        try:
            return await call()
        except _Retryable as exc:
            if attempt == attempts - 1:
                raise exc.error from None
            await asyncio.sleep(_BACKOFF * 2**attempt * (0.5 + random.random()))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


class Registry:
    """One registry endpoint; use as ``async with Registry(...) as r``."""

    def __init__(self, url: str, token: str | None, concurrency: int, timeout: float) -> None:
        self.url = url.rstrip("/")
        # identity: the registry never compresses, and a body we decode is one we bound.
        headers = {"User-Agent": "wreg", "Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._concurrency = concurrency
        self._timeout = timeout
        self._control: httpx.AsyncClient | None = None
        self._bulk: aiohttp.ClientSession | None = None
        # Whether to use the batched chunk routes: off once the registry shows it lacks
        # them (``BatchesUnsupported``), or when the caller turns them off; known once a
        # batch succeeded.
        self.batches = True
        self.batches_known = False
        # Raw bytes of large chunks fetched in one batched request (a "run"; 0: each alone,
        # on the cacheable GET); set from WREG_FETCH_RUN_BYTES. Off once a batch answer
        # shows the registry does not send them as cheaply as single GETs (an object
        # store behind it, where single GETs redirect to the store instead).
        self.run_bytes = 0
        self.large_batches = True

    async def __aenter__(self) -> Registry:
        # Loading the CA bundle costs ~60 ms; a plain-http registry never needs it (control
        # calls follow no redirects, so they cannot be sent to https elsewhere).
        self._control = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=self._timeout,
            verify=self.url.startswith("https://"),
        )
        return self

    def _session(self) -> aiohttp.ClientSession:
        """The chunk-transfer session, made on first use: aiohttp costs ~0.1 s to import
        (it builds SSL contexts), which a warm pull or an unchanged re-push never needs."""
        if self._bulk is None:
            import aiohttp

            self._bulk = aiohttp.ClientSession(
                headers=self._headers,
                # The same trust as the other two paths (``_tls_context``), not aiohttp's
                # own default (the system store, cached for the process).
                connector=aiohttp.TCPConnector(
                    limit=self._concurrency,
                    ssl=_tls_context() if self.url.startswith("https://") else True,
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._timeout),
            )
        return self._bulk

    async def __aexit__(self, *exc: object) -> None:
        if self._control is not None:
            await self._control.aclose()
        if self._bulk is not None:
            await self._bulk.close()

    # -- control calls (httpx) -------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        limit: int = MAX_MANIFEST_BYTES,
        too_large: ErrorCode = ErrorCode.BODY_TOO_LARGE,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a control call; its answer's body is read only up to ``limit`` bytes.

        The body streams in and the call fails with ``too_large`` once it passes the limit,
        so an endless or oversized answer costs at most ``limit`` bytes of memory; an error
        body is read up to ``_ERROR_BODY_LIMIT`` and the rest dropped.
        """
        assert self._control is not None  # noqa: S101 - narrows: set in __aenter__

        async def once() -> httpx.Response:
            assert self._control is not None  # noqa: S101 - narrows: set in __aenter__
            request = self._control.build_request(method, path, **kwargs)
            try:
                response = await self._control.send(request, stream=True)
                try:
                    failed = response.status_code >= 400
                    body = await _read_capped(response, _ERROR_BODY_LIMIT if failed else limit)
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                raise _Retryable(self._unreachable(exc)) from None
            status, request_id = response.status_code, response.headers.get("x-request-id")
            if failed:
                _fail(http_error(status, body or b"", request_id, what), status)
            if body is None:
                raise too_large.error(
                    f"the registry's answer to the {what} exceeds {limit} bytes",
                    detail={"limit": limit},
                    request_id=request_id,
                )
            return httpx.Response(status, headers=response.headers, content=body, request=request)

        return await with_retries(once)

    def _unreachable(self, exc: BaseException, what: str = "") -> WregError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer for {self._timeout:g} s (WREG_TIMEOUT)"
        aio = sys.modules.get("aiohttp")  # not imported: exc cannot be one of its errors
        connector_error = aio is not None and isinstance(exc, aio.ClientConnectorError)
        if connector_error and not self._is_registry(_origin_of(exc)):
            where = f"{getattr(exc, 'host', '?')}:{getattr(exc, 'port', '?')}"
            return ErrorCode.UNAVAILABLE.error(
                f"cannot reach the object store at {where} that the registry "
                f"at {self.url} redirected to (is the S3 endpoint in its presigned URLs "
                f"reachable from here? see WREG_S3_PUBLIC_ENDPOINT): {reason}"
            )
        if what and not connector_error:
            return ErrorCode.UNAVAILABLE.error(
                f"the connection to the registry at {self.url} broke during the {what}: {reason}"
            )
        return ErrorCode.UNAVAILABLE.error(f"cannot reach the registry at {self.url}: {reason}")

    def _is_registry(self, url: URL) -> bool:
        from yarl import URL

        return url.origin() == URL(self.url).origin()

    def _is_registry_origin(self, url: str) -> bool:
        return _origin(url) == _origin(self.url)

    def _download_error(
        self,
        digest: str,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        redirected_to: str | None,
        first_request_id: str | None,
    ) -> WregError:
        """The error for a failed chunk download; raises ``_Retryable`` when worth a retry.

        The registry may have redirected the download (``redirected_to``) to a presigned
        object-store URL (S3 with ``WREG_S3_REDIRECT``), which is fetched without our
        ``Authorization`` header (another origin). The store answers S3 XML errors, not
        ours, so they are mapped here: 404 means the registry's index and store disagree
        (permanent); 403 usually an expired URL, so another attempt (a fresh redirect, a
        fresh signature) may succeed; 429 and 5xx are transient.
        """
        if redirected_to is None or self._is_registry_origin(redirected_to):
            return http_error(status, body, headers.get("x-request-id"), f"download of {digest}")
        text = body[:4096].decode("utf-8", "replace")
        code_match, message_match = _S3_CODE.search(text), _S3_MESSAGE.search(text)
        store_code = code_match.group(1) if code_match else ""
        reason = f"HTTP {status} {store_code}".rstrip()
        if message_match:
            reason += f": {message_match.group(1)}"
        split = urlsplit(redirected_to)
        where = f"the object store at {split.hostname}:{split.port}, where the registry redirected"
        detail = {
            "digest": digest,
            "status": status,
            "store_code": store_code or None,
            "store_request_id": headers.get("x-amz-request-id"),
        }
        if status == 404:
            return ErrorCode.CHUNK_UNKNOWN.error(
                f"chunk {digest} is missing from {where} ({reason}): the registry's index "
                "lists it but its object store does not hold it",
                detail=detail,
                request_id=first_request_id,
            )
        if status == 403 or status in _RETRY_STATUSES:
            hint = (
                " (the presigned URL expired, the registry's clock is off, or its S3 "
                "credentials are wrong)"
                if status == 403
                else ""
            )
            raise _Retryable(
                ErrorCode.UNAVAILABLE.error(
                    f"{where}, refused the download of chunk {digest}: {reason}{hint}",
                    detail=detail,
                    request_id=first_request_id,
                )
            )
        return ErrorCode.INTERNAL.error(
            f"{where}, rejected the download of chunk {digest}: {reason}",
            detail=detail,
            request_id=first_request_id,
        )

    def chunk_reader(self) -> ChunkReader:
        """A blocking reader of chunk bodies for one fetch thread (``ChunkReader``)."""
        return ChunkReader(self)

    async def missing_chunks(self, name: str, digests: list[str]) -> set[str]:
        """Which of ``digests`` a push to repository ``name`` must upload (batched queries):
        those the registry lacks, and those this token could not prove it has."""
        missing: set[str] = set()
        for i in range(0, len(digests), MAX_MISSING_QUERY):
            batch = digests[i : i + MAX_MISSING_QUERY]
            r = await self._request(
                "POST",
                f"/v1/repositories/{name}/chunks/missing",
                "missing-chunks query",
                json={"digests": batch},
            )
            missing.update(r.json()["missing"])
        return missing

    async def put_manifest(self, name: str, digest: str, body: bytes, tag: str | None) -> None:
        params = {"tag": tag} if tag else {}
        await self._request(
            "PUT",
            f"/v1/repositories/{name}/manifests/{digest}",
            f"commit of {name}@{digest}",
            content=body,
            params=params,
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
        )

    async def get_manifest(self, ref: Reference) -> tuple[bytes, str | None]:
        """The manifest bytes and the digest the server says they have."""
        try:
            r = await self._request(
                "GET",
                f"/v1/repositories/{ref.name}/manifests/{ref.version}",
                f"pull of {ref}",
                too_large=ErrorCode.MANIFEST_TOO_LARGE,
            )
        except NotFound as exc:
            raise NotFound(
                exc.code,
                f"{ref} not found: {exc.message}",
                detail=exc.detail,
                request_id=exc.request_id,
            ) from None
        return r.content, r.headers.get("wreg-manifest-digest")

    async def get_json(self, path: str, what: str) -> Any:
        return (await self._request("GET", path, what)).json()

    async def inspect(self, name: str, reference: str) -> Any:
        """The registry's description of manifest ``reference`` of ``name`` (files,
        tensors, metadata: ``GET .../inspect/{reference}``), read up to four times the
        manifest size cap; the caller parses it strictly."""
        try:
            r = await self._request(
                "GET",
                f"/v1/repositories/{name}/inspect/{reference}",
                f"inspect of {name}@{reference}",
                limit=4 * MAX_MANIFEST_BYTES,
            )
        except NotFound as exc:
            raise NotFound(
                exc.code,
                f"{name}@{reference} not found: {exc.message}",
                detail=exc.detail,
                request_id=exc.request_id,
            ) from None
        return r.json()

    async def delete(self, path: str, what: str) -> None:
        await self._request("DELETE", path, what)

    # -- chunk bodies ----------------------------------------------------------------

    async def put_chunk(self, name: str, digest: str, encoded: bytes) -> None:
        session = self._session()
        url = f"{self.url}/v1/repositories/{name}/chunks/{digest}"

        async def once() -> None:
            try:
                async with session.put(
                    url, data=encoded, headers={"Content-Type": CHUNK_MEDIA_TYPE}
                ) as r:
                    body = await r.read()
                    if r.status < 400:
                        return
                    error = http_error(
                        r.status, body, r.headers.get("x-request-id"), f"upload of {digest}"
                    )
            except (_aio_client_error(), TimeoutError) as exc:
                raise _Retryable(self._unreachable(exc, f"upload of chunk {digest}")) from None
            _fail(error, r.status)

        await with_retries(once)

    async def get_chunk(self, name: str, digest: str) -> bytes:
        """The encoded chunk (the caller decodes and verifies it); for one-off reads —
        transfers use ``get_chunk_into`` with a reused buffer."""
        buf = bytearray(MAX_CHUNK_ENCODED)
        n = await self.get_chunk_into(name, digest, buf)
        return bytes(buf[:n])

    async def get_chunk_into(self, name: str, digest: str, buf: bytearray) -> int:
        """Read the encoded chunk of repository ``name`` into ``buf`` (reused across
        calls); returns its length. One ``ChunkReader`` attempt per try, in a thread.

        A body longer than ``buf`` is refused without retry (the manifest said how big
        the chunk is); the caller decodes and verifies the bytes.
        """
        return await self._read_in_thread(lambda reader: reader.get_into(name, digest, buf))

    # -- batches of small chunks -------------------------------------------------------

    def _no_batches(self, status: int, body: bytes) -> bool:
        """Whether an error answer to a batched route means batches do not work here
        (then ``batches`` goes off): a 405 or a 404 that is not one of our chunk errors
        (no such route: an older registry), or a 413 (its batch caps are lower than ours;
        a chunk too large alone gets the same answer again, sent alone)."""
        if status in (405, 413) or (status == 404 and b"CHUNK_UNKNOWN" not in body):
            self.batches = False
            return True
        return False

    async def put_chunks(self, name: str, chunks: list[tuple[str, bytes]]) -> None:
        """Upload many encoded chunks in one request (``POST .../chunks/upload``), each
        verified by the registry as a single upload is; one bad chunk refuses them all.
        Raises ``BatchesUnsupported`` if the registry lacks the route."""
        session = self._session()
        url = f"{self.url}/v1/repositories/{name}/chunks/upload"
        body = batch.encode_frames(chunks)
        what = f"upload of {len(chunks)} chunks"

        async def once() -> None:
            try:
                headers = {"Content-Type": CHUNK_FRAMES_MEDIA_TYPE}
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.read()
                    if r.status < 400:
                        self.batches_known = True
                        return
                    if self._no_batches(r.status, answer):
                        raise BatchesUnsupported
                    error = http_error(r.status, answer, r.headers.get("x-request-id"), what)
            except (_aio_client_error(), TimeoutError) as exc:
                raise _Retryable(self._unreachable(exc, what)) from None
            _fail(error, r.status)

        await with_retries(once)

    async def fetch_chunks_into(
        self, name: str, digests: list[str], buf: bytearray
    ) -> list[tuple[int, int]]:
        """Read many encoded chunks of repository ``name`` in one request (``POST
        .../chunks/fetch``) into ``buf``; returns each chunk's ``(start, end)`` in
        ``buf``, in the order of ``digests``. The caller decodes and verifies each.

        The answer is bounded by ``buf`` (the caller sized it from the manifest): reading
        stops once it would pass it (``BatchTooLarge``: encodings larger than this
        client's, to be fetched one by one). Frames that are not the digests asked for,
        in order, are ``CHUNK_INVALID`` without retry. Raises ``BatchesUnsupported`` if the
        registry lacks the route. One ``ChunkReader`` attempt per try, in a thread.
        """
        return await self._read_in_thread(lambda reader: reader.fetch_into(name, digests, buf))

    async def _read_in_thread(self, read: Callable[[ChunkReader], T]) -> T:
        """``read`` with a ``ChunkReader`` of its own, each try one attempt in a worker
        thread, transient failures retried (the async face of the fetch threads' path)."""
        loop = asyncio.get_running_loop()
        reader = self.chunk_reader()
        try:
            return await with_retries(lambda: loop.run_in_executor(None, read, reader))
        finally:
            reader.close()


class ChunkReader:
    """Blocking chunk GETs for one fetch thread: the pull's data path.

    One keep-alive ``http.client`` connection per origin (the registry, and the object
    store it may redirect to), each body read with ``readinto`` straight into the
    caller's buffer: the socket read runs outside the GIL and nothing is copied in
    Python, so fetch threads scale with cores where one event loop doing every socket
    read would not (``bench/http_engines.py``). Each call is one attempt: transient
    failures raise ``_Retryable`` for the caller's retry loop. A socket that delivers no
    byte for ``WREG_TIMEOUT`` seconds is such a failure (a stalled transfer is retried,
    not waited on). Not thread-safe: one reader per thread.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._current: http.client.HTTPConnection | None = None
        self._redirected_to: str | None = None  # where the request in progress was sent on

    def close(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close()

    def abort(self) -> None:
        """Break the request in progress (from another thread): its read fails at once."""
        connection = self._current
        sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _connection(self, url: str) -> http.client.HTTPConnection:
        split = urlsplit(url)
        scheme, host = split.scheme, split.hostname or ""
        port = split.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        connection = self._connections.get(key)
        if connection is None:
            timeout = self._registry._timeout
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=_tls_context()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[key] = connection
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        for key, known in list(self._connections.items()):
            if known is connection:
                del self._connections[key]

    def _send(
        self, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = self._connection(url)
        split = urlsplit(url)
        target = split.path + (f"?{split.query}" if split.query else "")
        self._current = connection
        for attempt in range(2):
            try:
                method = "GET" if body is None else "POST"
                connection.request(method, target, body=body, headers=headers)
                return connection, connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A keep-alive connection the server closed while idle: once more, anew.
                connection.close()
                if attempt:
                    self._drop(connection)
                    raise
            except BaseException:
                self._drop(connection)  # mid-request: never reused
                raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _attempt(self, what: str) -> Iterator[None]:
        """One request: the connection it used is dropped on any failure (never reused
        mid-request), and a transport failure becomes a retryable ``UNAVAILABLE``."""
        self._redirected_to = None
        try:
            yield
        except (OSError, http.client.HTTPException) as exc:
            self._drop_current()
            raise _Retryable(self._unreachable(exc, what, self._redirected_to)) from None
        except BaseException:
            self._drop_current()
            raise
        finally:
            self._current = None

    def _drop_current(self) -> None:
        if self._current is not None:
            self._drop(self._current)

    def get_into(self, name: str, digest: str, buf: bytearray | memoryview) -> int:
        """One attempt at reading the encoded chunk into ``buf``; returns its length."""
        registry = self._registry
        url = f"{registry.url}/v1/repositories/{name}/chunks/{digest}"
        headers = dict(registry._headers)
        with self._attempt(f"download of chunk {digest}"):
            first_request_id: str | None = None
            connection, r = self._send(url, headers)
            if r.status in _REDIRECTS and r.getheader("location"):
                first_request_id = r.getheader("x-request-id")
                self._redirected_to = urljoin(url, r.getheader("location", ""))
                _discard(connection, r)
                if not registry._is_registry_origin(self._redirected_to):
                    headers.pop("Authorization", None)  # never sent to another origin
                connection, r = self._send(self._redirected_to, headers)
            if r.status >= 400:
                body = r.read(_ERROR_BODY_LIMIT)
                _discard(connection, r)
                error = registry._download_error(
                    digest,
                    r.status,
                    body,
                    _lower(r.getheaders()),
                    self._redirected_to,
                    first_request_id,
                )
                _fail(error, r.status)
            too_large = ErrorCode.CHUNK_INVALID.error(
                f"chunk {digest} is larger than the manifest allows"
            )
            return _read_body(r, memoryview(buf), too_large)

    def fetch_into(
        self, name: str, digests: list[str], buf: bytearray | memoryview
    ) -> list[tuple[int, int]]:
        """One attempt at ``POST .../chunks/fetch`` (``Registry.fetch_chunks_into``) into
        ``buf``; each chunk's ``(start, end)`` in it, in the order of ``digests``."""
        with self._attempt(f"download of {len(digests)} chunks"):
            r = self._post_fetch(name, digests)
            view = memoryview(buf)
            n = _read_body(r, view, BatchTooLarge())
            return _spans(view[:n], digests)

    def _post_fetch(self, name: str, digests: list[str]) -> http.client.HTTPResponse:
        """``POST .../chunks/fetch`` (inside an ``_attempt``): the answer, once it is a
        success (errors raised; ``BatchesUnsupported`` where the route is missing), with
        what it says of batches noted on the registry."""
        if len(digests) > MAX_BATCH_CHUNKS:
            raise ValueError(f"at most {MAX_BATCH_CHUNKS} chunks per batch")
        registry = self._registry
        url = f"{registry.url}/v1/repositories/{name}/chunks/fetch"
        headers = {**registry._headers, "Content-Type": "application/json"}
        body = json.dumps({"digests": digests}).encode()
        connection, r = self._send(url, headers, body)
        if r.status >= 400:
            answer = r.read(_ERROR_BODY_LIMIT)
            _discard(connection, r)
            if registry._no_batches(r.status, answer):
                raise BatchesUnsupported
            what = f"download of {len(digests)} chunks"
            _fail(http_error(r.status, answer, r.getheader("x-request-id"), what), r.status)
        registry.batches_known = True
        if r.getheader(LARGE_BATCHES_HEADER) != "yes":
            registry.large_batches = False
        return r

    def fetch_each(
        self,
        name: str,
        digests: list[str],
        buf: bytearray | memoryview,
        each: Callable[[int, memoryview], None],
    ) -> int:
        """One attempt at ``POST .../chunks/fetch`` for a run of large chunks, read one
        frame at a time: each chunk's encoded bytes land in ``buf`` (which holds one
        chunk, not the run) and ``each(index, encoded)`` runs on them before the next
        frame is read. Frames must be ``digests`` in order. Returns the chunk bytes read.
        Whether the registry sends large batches as cheaply as single GETs (the answer's
        ``LARGE_BATCHES_HEADER``) is noted on it (``Registry.large_batches``)."""
        try:
            with self._attempt(f"download of {len(digests)} chunks"):
                r = self._post_fetch(name, digests)
                header = bytearray(batch.FRAME_HEADER_SIZE)
                view = memoryview(buf)
                total = 0
                for index, digest in enumerate(digests):
                    if _read_exactly(r, memoryview(header)) < len(header):
                        raise http.client.IncompleteRead(b"")
                    raw_digest, length = batch.FRAME_HEADER.unpack(header)
                    if PREFIX + raw_digest.hex() != digest:
                        r.close()
                        raise ErrorCode.CHUNK_INVALID.error(
                            f"the registry answered chunk {PREFIX + raw_digest.hex()} where "
                            f"{digest} was asked for"
                        )
                    if length > len(view):
                        r.close()
                        raise ErrorCode.CHUNK_INVALID.error(
                            f"chunk {digest} is larger than the manifest allows"
                        )
                    if _read_exactly(r, view[:length]) < length:
                        raise http.client.IncompleteRead(b"", length)
                    try:
                        each(index, view[:length])
                    except OSError as exc:  # ``_attempt`` would take it for a broken connection
                        raise _LocalFailure(exc) from None
                    total += length
                if r.read(1):
                    r.close()
                    raise ErrorCode.CHUNK_INVALID.error(
                        f"the registry answered more than the {len(digests)} chunks asked for"
                    )
                return total
        except _LocalFailure as failure:  # e.g. a full disk: not the network's fault
            raise failure.error from None

    def _unreachable(self, exc: BaseException, what: str, redirected_to: str | None) -> WregError:
        registry = self._registry
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no bytes for {registry._timeout:g} s (WREG_TIMEOUT)"
        if redirected_to is not None and not registry._is_registry_origin(redirected_to):
            split = urlsplit(redirected_to)
            return ErrorCode.UNAVAILABLE.error(
                f"cannot reach the object store at {split.hostname}:{split.port} that the "
                f"registry at {registry.url} redirected to (is the S3 endpoint in its "
                f"presigned URLs reachable from here? see WREG_S3_PUBLIC_ENDPOINT): {reason}"
            )
        if isinstance(exc, ConnectionRefusedError | socket.gaierror):
            return ErrorCode.UNAVAILABLE.error(
                f"cannot reach the registry at {registry.url}: {reason}"
            )
        return ErrorCode.UNAVAILABLE.error(
            f"the connection to the registry at {registry.url} broke during the {what}: {reason}"
        )


class _LocalFailure(Exception):
    """An ``OSError`` of this machine's (writing a chunk) inside a network attempt."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _discard(connection: http.client.HTTPConnection, r: http.client.HTTPResponse) -> None:
    """Finish with an answer whose body is not wanted: read a short rest (the connection
    stays usable), else close the connection."""
    rest = r.read(_ERROR_BODY_LIMIT)
    if not r.isclosed() or len(rest) >= _ERROR_BODY_LIMIT:
        connection.close()


def _read_exactly(r: http.client.HTTPResponse, view: memoryview) -> int:
    """Read into all of ``view`` unless the body ends first; the bytes read."""
    n = 0
    while n < len(view):
        got = r.readinto(view[n:])
        if not got:
            break
        n += got
    return n


def _read_body(r: http.client.HTTPResponse, view: memoryview, too_large: Exception) -> int:
    """The body of ``r`` read into ``view``; raises ``too_large`` (reading no further) if
    it is longer, and ``IncompleteRead`` if it ends before its ``Content-Length``."""
    declared = r.getheader("content-length")
    if declared is not None and declared.isdigit() and int(declared) > len(view):
        r.close()
        raise too_large
    n = _read_exactly(r, view)
    if n == len(view) and r.read(1):
        r.close()
        raise too_large
    if declared is not None and declared.isdigit() and n != int(declared):
        raise http.client.IncompleteRead(b"", int(declared) - n)
    return n


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificate checks as the control calls (httpx) make them: ``SSL_CERT_FILE``, else
    ``SSL_CERT_DIR``, else certifi's bundle. Built once, on the first https download."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _origin(url: str) -> tuple[str, str, int]:
    split = urlsplit(url)
    scheme = split.scheme.lower()
    return scheme, (split.hostname or "").lower(), split.port or (443 if scheme == "https" else 80)


def _spans(body: memoryview, digests: list[str]) -> list[tuple[int, int]]:
    """Where each frame's chunk lies in ``body``; the frames must be ``digests`` in order."""
    spans: list[tuple[int, int]] = []
    at = 0
    try:
        for digest, encoded in batch.frames(
            body, max_count=len(digests), max_length=MAX_CHUNK_ENCODED
        ):
            at += batch.FRAME_HEADER_SIZE
            if digest != digests[len(spans)]:
                raise ErrorCode.CHUNK_INVALID.error(
                    f"the registry answered chunk {digest} where {digests[len(spans)]} "
                    "was asked for"
                )
            spans.append((at, at + len(encoded)))
            at += len(encoded)
    except WregError as exc:
        raise ErrorCode.CHUNK_INVALID.error(
            f"malformed batch answer from the registry: {exc.message}"
        ) from None
    if len(spans) != len(digests):
        raise ErrorCode.CHUNK_INVALID.error(
            f"the registry answered {len(spans)} of the {len(digests)} chunks asked for"
        )
    return spans


def _aio_client_error() -> type[Exception]:
    import aiohttp

    return aiohttp.ClientError


def _origin_of(exc: Any) -> URL:
    """The origin an aiohttp ``ClientConnectorError`` failed to reach."""
    from yarl import URL

    return URL.build(scheme="https" if exc.ssl else "http", host=exc.host, port=exc.port)
