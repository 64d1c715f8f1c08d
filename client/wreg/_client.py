"""The Python SDK: ``wreg.Client(url, token).push(path, ref)`` / ``.pull(ref, dest)``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wreg._config import ClientSettings, registry_root
from wreg._progress import NoProgress, Progress
from wreg.core.errors import WregError
from wreg.core.reference import Reference, validate_name

# The modules that do the work load on first use: ``import wreg`` / ``wreg --help`` and a
# settings error need none of them, and each command loads only its own (issue 11).
if TYPE_CHECKING:
    from wreg._cache import NodeCache, SharingSetting
    from wreg._cache_ops import LinkMode
    from wreg._http import Registry
    from wreg._load import Producer, TensorStream
    from wreg._load.produce import LoadStats, Ready, Source
    from wreg._results import (
        CacheListing,
        PruneResult,
        PullResult,
        PushResult,
        VerifyResult,
        WarmResult,
    )
    from wreg.core.diff import Described


class Client:
    """A registry client. Arguments left out come from ``WREG_*`` environment settings."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        concurrency: int | None = None,
        offline: bool | None = None,
        inflight_bytes: int | None = None,
    ) -> None:
        settings = ClientSettings.from_env()
        self.url = registry_root(url, "url") if url else settings.url.rstrip("/")
        # Precedence: the argument (--token), WREG_TOKEN, then what `wreg login` stored.
        self.token = token if token is not None else settings.token
        if self.token is None:
            from wreg._credentials import load_token

            self.token = load_token(self.url)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache
        self.concurrency = concurrency or settings.concurrency
        self.timeout = settings.timeout
        self.offline = settings.offline if offline is None else offline
        self.inflight_bytes = inflight_bytes or settings.inflight_bytes
        self.fetch_run_bytes = settings.fetch_run_bytes
        self.cache_shared: SharingSetting = settings.cache_shared
        self.cache_trusted = settings.trusted_uids

    def _cache(self) -> contextlib.AbstractContextManager[NodeCache]:
        from wreg._cache import opened_cache

        return opened_cache(self.cache_dir, self.cache_shared, self.cache_trusted)

    def _registry(self) -> Registry:
        from wreg._http import Registry

        registry = Registry(self.url, self.token, self.concurrency, self.timeout)
        registry.run_bytes = self.fetch_run_bytes
        return registry

    def _executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))

    # -- push / pull -------------------------------------------------------------

    def push(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        progress: Progress | None = None,
        follow_symlinks: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> PushResult:
        """Upload the directory ``path`` as ``ref`` (default: ``<dirname>@latest``).

        A symlink that leaves ``path`` (or leads nowhere) is skipped and listed in
        ``PushResult.skipped``, unless ``follow_symlinks``; a symlink to a file inside
        pushes that file's content. ``metadata`` (JSON values) is stored in the manifest.
        """
        return asyncio.run(
            self.apush(
                path, ref, progress=progress, follow_symlinks=follow_symlinks, metadata=metadata
            )
        )

    async def apush(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        progress: Progress | None = None,
        follow_symlinks: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> PushResult:
        from wreg import _push

        root = Path(path)
        parsed = Reference.parse(ref) if ref else _push.default_reference(root)
        return await self._push(
            root, parsed, progress, follow_symlinks=follow_symlinks, metadata=metadata
        )

    async def _push(
        self,
        root: Path,
        ref: Reference,
        progress: Progress | None,
        *,
        follow_symlinks: bool = False,
        scanned: Sequence[tuple[Path, str, int, os.stat_result]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PushResult:
        from wreg import _push

        with self._executor() as executor, self._cache() as cache:
            async with self._registry() as registry:
                return await _push.push(
                    registry,
                    root,
                    ref,
                    executor,
                    progress or NoProgress(),
                    self.concurrency,
                    cache=cache,
                    inflight_bytes=self.inflight_bytes,
                    follow_symlinks=follow_symlinks,
                    scanned=scanned,
                    metadata=metadata,
                )

    def push_tensors(
        self,
        tensors: Mapping[str, Any],
        ref: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        filename: str = "model.safetensors",
        file_metadata: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Push a checkpoint from memory as ``ref``: ``tensors`` (name -> numpy array, or
        torch tensor where torch is installed) become the safetensors file ``filename``,
        never written to disk.

        The file is byte for byte what ``safetensors.numpy.save(tensors, file_metadata)``
        writes, and chunked as a push of that file from disk is, so unchanged tensors are
        not sent again and the manifest digest is that of pushing the saved file.
        Contiguous little-endian arrays are read in place (no copy); others are copied
        once, and CUDA tensors are copied to host memory. The arrays must not change
        until the push returns. ``metadata`` (a JSON object, at most 1 MiB; convention:
        ``{"step": int, "run_id": str, "parent": "repo@tag-or-digest"}``) is stored in
        the manifest; ``files`` adds small files (path -> bytes, e.g. ``config.json``).
        Bad input (a value that is not an array, a name that is not a string, an object
        dtype, metadata that is not JSON) raises ``InvalidInput`` before anything is sent.
        """
        return asyncio.run(
            self.apush_tensors(
                tensors,
                ref,
                metadata=metadata,
                filename=filename,
                file_metadata=file_metadata,
                files=files,
                progress=progress,
            )
        )

    async def apush_tensors(
        self,
        tensors: Mapping[str, Any],
        ref: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        filename: str = "model.safetensors",
        file_metadata: Mapping[str, str] | None = None,
        files: Mapping[str, bytes] | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """``push_tensors`` in a running event loop (hashing runs in worker threads)."""
        from wreg import _push, _push_tensors

        parsed = Reference.parse(ref)
        memory = _push_tensors.prepare(tensors, filename, file_metadata, files)
        checked = _push_tensors.check_metadata(metadata)
        with self._executor() as executor:
            async with self._registry() as registry:
                return await _push.push(
                    registry,
                    Path(filename),
                    parsed,
                    executor,
                    progress or NoProgress(),
                    self.concurrency,
                    inflight_bytes=self.inflight_bytes,
                    scanned=[],
                    metadata=checked,
                    memory=memory,
                )

    def import_hf(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        repo_id: str | None = None,
        revision: str | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Push a Hugging Face snapshot already on disk as ``ref``, without downloading it.

        ``path`` is a hub cache repository (``models--org--name``: the snapshot
        ``refs/<revision>`` names, default ``main``; ``revision`` may also be a commit in
        ``snapshots/``), one snapshot (``…/snapshots/<commit>``), a ``local_dir=``
        download or any plain directory (its ``.cache/huggingface/`` is left out), or a
        hub cache root together with ``repo_id``. ``ref`` defaults to the wreg name of
        the HF id (``Org/Model`` → ``org/model@latest``). A snapshot's files are read
        from the blobs its links lead to; a link out of the repository's ``blobs/``, a
        dangling link or an unfinished download is refused (``HF_SNAPSHOT_INVALID``)
        before anything is sent. The manifest records ``{"hf": {"repo_id", "commit",
        "revision"}}`` (what is known). Underneath it is a push: chunks the registry
        holds are not sent again.
        """
        return asyncio.run(
            self.aimport_hf(path, ref, repo_id=repo_id, revision=revision, progress=progress)
        )

    async def aimport_hf(
        self,
        path: str | os.PathLike[str],
        ref: str | None = None,
        *,
        repo_id: str | None = None,
        revision: str | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        from wreg import _import_hf

        found = await asyncio.to_thread(
            _import_hf.locate, Path(path), repo_id=repo_id, revision=revision
        )
        parsed = Reference.parse(ref) if ref else found.default_reference()
        return await self._push(
            found.root, parsed, progress, scanned=found.files, metadata=found.metadata()
        )

    def pull(
        self,
        ref: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_total: int | str | None = None,
        force: bool = False,
        link: LinkMode = "hardlink",
    ) -> PullResult:
        """Fetch ``ref`` into the node cache; with ``dest``, also materialise it there.

        ``include`` / ``exclude`` are ``fnmatch`` patterns on the model's file paths
        (``*.safetensors``): only files matching an include pattern (all, if none is
        given) and no exclude pattern are pulled. Offline (``offline=True`` or
        ``WREG_OFFLINE=1``), the reference is resolved from the node cache alone and an
        incomplete snapshot is an error. A pull interrupted at any point resumes where it
        stopped; two processes pulling the same files download them once.

        ``max_total`` (bytes, or a size such as ``"500G"``) caps the bytes the pull may
        write (files missing from the cache, plus copies into ``dest`` on another
        filesystem); by default each filesystem's free space. Past it the pull fails
        before writing anything (``PULL_TOO_LARGE``).

        Nothing is written outside ``dest``, nor through a symlink planted in it
        (``LOCAL_PATH_UNSAFE``). A file already in ``dest`` with other content than the
        model's is refused before anything is written (``LOCAL_FILE_EXISTS``), unless
        ``force``; a file with the same content is left as it is, so pulling again is a
        no-op.

        ``link`` is how files get into ``dest``: ``hardlink`` (default, instant; a write
        into one writes into the cache, which then re-hashes that blob before any other
        use), ``copy`` or ``reflink`` (for a ``dest`` you will write into) or
        ``symlink`` (to the blob). A blob the cache does not trust is always copied.
        """
        return asyncio.run(
            self.apull(
                ref,
                dest,
                progress=progress,
                include=include,
                exclude=exclude,
                max_total=max_total,
                force=force,
                link=link,
            )
        )

    async def apull(
        self,
        ref: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_total: int | str | None = None,
        force: bool = False,
        link: LinkMode = "hardlink",
    ) -> PullResult:
        from wreg import _pull

        parsed = Reference.parse(ref)
        if isinstance(max_total, str):
            from wreg import _cache_ops

            max_total = _cache_ops.parse_size(max_total)
        with self._executor() as executor, self._cache() as cache:
            async with contextlib.AsyncExitStack() as stack:
                registry = None
                if not self.offline:
                    registry = await stack.enter_async_context(self._registry())
                return await _pull.pull(
                    registry,
                    cache,
                    parsed,
                    Path(dest) if dest is not None else None,
                    executor,
                    progress or NoProgress(),
                    self.concurrency,
                    inflight_bytes=self.inflight_bytes,
                    include=include,
                    exclude=exclude,
                    max_total=max_total,
                    force=force,
                    link=link,
                )

    # -- loading -----------------------------------------------------------------

    def stream(
        self,
        ref: str,
        *,
        tensors: Sequence[str] | str | None = None,
        rows: Mapping[str, tuple[int, int]] | None = None,
        shard: tuple[int, int] | None = None,
        framework: str = "numpy",
        device: str | None = None,
        dtype: Any = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> TensorStream:
        """``(name, tensor)`` for the tensors of ``ref``'s safetensors files, each as soon
        as every chunk it overlaps is verified (completion order), while the rest is
        still downloading. Close the stream (or use ``with``) to stop early.

        Sources, fastest first: the node cache (memory-mapped), chunks other cached
        files hold, then the registry. A full load leaves the model in the node cache (the
        next start is warm); a selective one keeps the chunks it fetched as partial files
        that a later pull completes.

        ``tensors``: ``fnmatch`` patterns on tensor names (default: all). ``rows``:
        ``{pattern: (start, stop)}`` cuts matching tensors along dim 0. ``shard=(rank,
        world_size)`` cuts every other tensor with a dimension into ``world_size``
        near-equal dim-0 parts and keeps part ``rank``. Only the chunks holding the
        selected bytes are fetched.

        ``framework``: ``"numpy"`` (bf16/fp8 as ``ml_dtypes`` types) or ``"torch"``;
        ``device`` (torch): ``"cpu"`` (zero copy) or e.g. ``"cuda:0"`` (through a small
        ring of pinned buffers, so host memory stays bounded); ``dtype`` converts on the
        way. ``include``/``exclude`` pick files as for ``pull``.
        """
        from wreg._load import TensorStream
        from wreg._load.materialize import Materializer

        materialize = Materializer(framework, device, dtype)
        producer = self._producer(ref, tensors, rows, shard, include, exclude, progress)
        return TensorStream(producer, materialize)

    def load(self, ref: str, **options: Any) -> dict[str, Any]:
        """Every selected tensor of ``ref`` by name (``stream``'s options)."""
        with self.stream(ref, **options) as tensors:
            return dict(tensors)

    async def astream(
        self,
        ref: str,
        *,
        tensors: Sequence[str] | str | None = None,
        rows: Mapping[str, tuple[int, int]] | None = None,
        shard: tuple[int, int] | None = None,
        framework: str = "numpy",
        device: str | None = None,
        dtype: Any = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: Progress | None = None,
        stats: LoadStats | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """``stream`` on the running event loop; ``stats`` (if given) is filled in."""
        from wreg._load import LoadStats, astream
        from wreg._load.materialize import Materializer

        materialize = Materializer(framework, device, dtype)
        producer = self._producer(ref, tensors, rows, shard, include, exclude, progress)
        async for item in astream(producer, materialize, stats or LoadStats()):
            yield item

    async def aload(self, ref: str, **options: Any) -> dict[str, Any]:
        """``load`` on the running event loop."""
        return {name: tensor async for name, tensor in self.astream(ref, **options)}

    def pull_tensors(
        self,
        ref: str,
        dest: str | os.PathLike[str],
        *,
        tensors: Sequence[str] | str | None = None,
        rows: Mapping[str, tuple[int, int]] | None = None,
        shard: tuple[int, int] | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        force: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """``wreg pull REF --tensors ...``: write into ``dest`` safetensors files that hold
        only the selected tensors (``stream``'s selection), and the model's other files
        whole. Returns what was written and fetched (``LoadStats`` and ``written``)."""
        import glob

        from wreg._load.produce import LoadStats
        from wreg._load.write import write_selected

        items: list[Ready] = []
        stats = LoadStats()
        sources: list[Source] = []
        producer = self._producer(ref, tensors, rows, shard, include, exclude, progress)
        try:
            asyncio.run(producer(items.append, stats, sources))
            written = write_selected(items, Path(dest), force)
        finally:
            for source in sources:
                source.close()
        others: list[str] = []
        with self._cache() as cache:
            manifest = cache.load_manifest(stats.manifest)
        if manifest is not None:
            from wreg._pull import select_files

            others = [
                e.path
                for e in select_files(manifest, include, exclude)
                if not e.path.endswith(".safetensors")
            ]
        if others:  # config, tokenizer...: whole, pinned to the manifest just loaded
            name = Reference.parse(ref).name
            self.pull(
                f"{name}@{stats.manifest}",
                dest,
                include=[glob.escape(p) for p in others],
                force=force,
                progress=progress,
            )
        stats.tensors = len(items)
        return {"reference": ref, "path": str(dest), "written": written + others, **stats.to_json()}

    def _producer(
        self,
        ref: str,
        tensors: Sequence[str] | str | None,
        rows: Mapping[str, tuple[int, int]] | None,
        shard: tuple[int, int] | None,
        include: Sequence[str],
        exclude: Sequence[str],
        progress: Progress | None,
    ) -> Producer:
        from wreg._load.produce import produce
        from wreg._load.select import Selection

        parsed = Reference.parse(ref)
        selection = Selection.of(tensors, rows, shard)

        async def run(
            emit: Callable[[Ready], None], stats: LoadStats, sources: list[Source]
        ) -> None:
            with self._executor() as executor, self._cache() as cache:
                async with contextlib.AsyncExitStack() as stack:
                    registry = None
                    if not self.offline:
                        registry = await stack.enter_async_context(self._registry())
                    await produce(
                        registry,
                        cache,
                        parsed,
                        selection,
                        executor,
                        progress or NoProgress(),
                        self.concurrency,
                        self.inflight_bytes,
                        emit,
                        stats,
                        sources,
                        include=include,
                        exclude=exclude,
                    )

        return run

    # -- listing -----------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The registry's view of this client's token: ``{"name", "scopes", "auth"}``
        (``name`` is null without a token or when the registry has auth off)."""

        async def go() -> dict[str, Any]:
            async with self._registry() as r:
                doc: dict[str, Any] = await r.get_json("/v1/tokens/self", "token check")
                return doc

        return asyncio.run(go())

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

    # -- inspecting ----------------------------------------------------------------

    def inspect(self, ref: str) -> dict[str, Any]:
        """What model ``ref`` holds, without downloading a tensor byte: its files (path,
        size, digest, format, metadata, parameters) with their tensors (name, dtype,
        shape, offset, nbytes, parameters, tensor digest), and totals. The registry
        describes the headers (``GET .../inspect/{reference}``); the manifest is fetched
        and verified here, and the description's files must be exactly its files."""
        return asyncio.run(self._inspect(Reference.parse(ref))).description.to_json()

    def diff(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """What changed from ``ref_a`` to ``ref_b``: files and tensors added, removed and
        changed, and the bytes of ``ref_b`` shared with ``ref_a`` or new
        (``wreg.core.diff``). Reads manifests and descriptions only."""
        from wreg.core.diff import diff

        async def go() -> dict[str, Any]:
            a = await self._inspect(Reference.parse(ref_a))
            b = await self._inspect(Reference.parse(ref_b))
            return diff(a, b)

        return asyncio.run(go())

    async def _inspect(self, ref: Reference) -> Described:
        from wreg._pull.resolve import resolve
        from wreg.core.diff import Described
        from wreg.core.errors import ErrorCode
        from wreg.core.tensors import ManifestDescription, unverifiable

        async with self._registry() as r:
            resolved = await resolve(r, ref)
            # By the digest just verified: a tag moving meanwhile cannot mix two versions.
            doc = await r.inspect(ref.name, resolved.digest)
        description = ManifestDescription.from_json(doc)
        listed = [(f.path, f.size, f.digest) for f in description.files]
        expected = [(f.path, f.size, f.digest) for f in resolved.manifest.files]
        if description.digest != resolved.digest or listed != expected:
            raise ErrorCode.DIGEST_MISMATCH.error(
                f"the registry described other files than manifest {resolved.digest} of {ref}"
            )
        for entry, file in zip(resolved.manifest.files, description.files, strict=True):
            wrong = unverifiable(file, [(c.digest, c.size) for c in entry.chunks])
            if wrong:
                raise ErrorCode.DIGEST_MISMATCH.error(
                    f"the registry's description of {entry.path} in {ref} contradicts its "
                    f"chunks (tensor {wrong[0]!r} and {len(wrong) - 1} more)"
                )
        return Described(str(ref), resolved.digest, resolved.manifest, description)

    # -- deleting ----------------------------------------------------------------

    def delete(self, ref: str) -> dict[str, str]:
        """Delete ``NAME@TAG`` (the tag only) or ``NAME@blake3:<hex>`` (the manifest and
        every tag pointing at it); a bare ``NAME`` means ``NAME@latest``.

        Chunks are not freed here: ``wreg-server gc`` removes the ones no manifest uses.
        Returns ``{"reference", "deleted": "tag" | "manifest"}``.
        """
        return asyncio.run(self.adelete(ref))

    async def adelete(self, ref: str) -> dict[str, str]:
        parsed = Reference.parse(ref)
        kind, path = (
            ("manifest", f"/v1/repositories/{parsed.name}/manifests/{parsed.digest}")
            if parsed.digest is not None
            else ("tag", f"/v1/repositories/{parsed.name}/tags/{parsed.version}")
        )
        async with self._registry() as r:
            await r.delete(path, f"delete of {parsed}")
        return {"reference": str(parsed), "deleted": kind}

    # -- node cache ----------------------------------------------------------------

    def cache_ls(self) -> CacheListing:
        """The snapshots in the node cache (repository, tags, size, last use, pinned) and
        the bytes its blobs and partial downloads take."""
        from wreg import _cache_ops

        with self._cache() as cache:
            return _cache_ops.listing(cache)

    def cache_warm(
        self,
        refs: Iterable[str],
        *,
        on_result: Callable[[WarmResult], None] | None = None,
    ) -> list[WarmResult]:
        """Pull each reference into the node cache (for cron jobs).

        Idempotent (what is cached is not fetched again), and holds ``locks/warm.lock`` so
        an overlapping run waits for this one instead of colliding. A failing reference
        does not stop the others: each gets a ``WarmResult`` (``ok`` false, ``error`` set),
        passed to ``on_result`` as soon as it is done.
        """
        from wreg._cache import acquire
        from wreg._results import WarmResult

        results: list[WarmResult] = []
        with self._cache() as cache:
            lock = cache.warm_lock()
            asyncio.run(acquire(lock))
        try:
            for ref in refs:
                start = time.monotonic()
                try:
                    pulled = self.pull(ref)
                    result = WarmResult(
                        reference=pulled.reference,
                        ok=True,
                        manifest=pulled.manifest,
                        bytes_downloaded=pulled.bytes_downloaded,
                        seconds=round(time.monotonic() - start, 3),
                    )
                except (WregError, OSError) as exc:
                    result = WarmResult(
                        reference=ref,
                        ok=False,
                        seconds=round(time.monotonic() - start, 3),
                        error=str(exc),
                    )
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            lock.release()
        return results

    def cache_prune(self, max_size: int | str, *, dry_run: bool = False) -> PruneResult:
        """Remove least recently used snapshots (and unreferenced blobs and abandoned
        partial downloads) until the node cache holds at most ``max_size`` bytes
        (``"50G"`` works too). Snapshots in use or pinned are never removed."""
        from wreg import _cache_ops

        limit = _cache_ops.parse_size(max_size) if isinstance(max_size, str) else max_size
        with self._cache() as cache:
            return _cache_ops.prune(cache, limit, dry_run=dry_run)

    def cache_pin(self, ref: str) -> str:
        """Keep the cached snapshot ``ref`` names from being pruned; returns its manifest
        digest (a tag is resolved through the node cache, without the network)."""
        from wreg import _cache_ops

        with self._cache() as cache:
            return _cache_ops.set_pin(cache, Reference.parse(ref), True)

    def cache_unpin(self, ref: str) -> str:
        """Undo ``cache_pin``; returns the manifest digest."""
        from wreg import _cache_ops

        with self._cache() as cache:
            return _cache_ops.set_pin(cache, Reference.parse(ref), False)

    def cache_verify(self, *, repair: bool = False) -> VerifyResult:
        """Re-hash every cached file. With ``repair``, remove corrupt files and pull the
        snapshots that lost one again (by manifest digest, from the registry)."""
        from wreg import _cache_ops

        def pull_again(repo: str, digest: str) -> None:
            self.pull(f"{repo}@{digest}")

        with self._cache() as cache:
            return _cache_ops.verify(cache, pull_again if repair else None)
