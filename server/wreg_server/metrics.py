"""Prometheus metrics: one ``Metrics`` (and one ``CollectorRegistry``) per app.

A registry per app rather than prometheus-client's global one, so tests can build many
apps in one process. What is counted, and where:

* HTTP (``api/middleware.py``): requests by method, route *template* and status; request
  and response body bytes by route; request duration.
* Chunks (``domain/chunks.py``): each missing-chunks query's digests queried and found
  missing, plus the raw bytes found present (what pushes did not have to send); uploads
  by result ``new`` / ``present`` with their raw bytes. The dedupe ratio of pushes is
  ``wreg_chunk_bytes_present_total / (that + wreg_chunk_upload_raw_bytes_total{result="new"})``.
* Chunk downloads the hot path answered (``api/hotpath.py``), by how the body went:
  ``zerocopy`` (``sendfile``), ``pathsend`` (the ASGI server's own), ``read``; the rest
  of ``wreg_http_requests`` on the chunk route took the full route.
* Garbage collection runs in its own process (``wreg-server gc``), so its figures cannot
  live in a server's registry; ``gc_registry`` builds the ``wreg_gc_*`` gauges that
  ``gc --metrics-file`` writes for node_exporter's textfile collector.

Series are named and labelled as a scrape reads them: no ``*_created`` twin of every
counter and histogram (prometheus-client's default, switched off for the process at
import: Prometheus ignores them, and they doubled the exposition), and ``route`` labels
spell the route as the API and the OpenAPI schema do (``{name}``, not the router's
``{name:path}``; ``api/middleware.py``).

Domain code reports through ``current()``: the middleware sets the request's ``Metrics``
in a context variable, and outside a request (the GC command, tests) ``current()``
returns a no-op sink, so domain functions stay callable without a server.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from wreg_server.domain.gc import GcResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "current", "gc_registry"]

UNMATCHED: Final = "unmatched"

# Process-wide in prometheus-client, read at each scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The server's counters, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "wreg_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.duration = Histogram(
            "wreg_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.bytes_in = Counter(
            "wreg_http_request_bytes", "request body bytes received", ["route"], registry=r
        )
        self.bytes_out = Counter(
            "wreg_http_response_bytes", "response body bytes sent", ["route"], registry=r
        )
        self.queried = Counter(
            "wreg_chunks_queried", "digests asked about by missing-chunks queries", registry=r
        )
        self.missing = Counter(
            "wreg_chunks_missing", "digests missing-chunks queries reported missing", registry=r
        )
        self.present_bytes = Counter(
            "wreg_chunk_bytes_present",
            "raw bytes of chunks missing-chunks queries found present (not re-sent)",
            registry=r,
        )
        self.uploads = Counter(
            "wreg_chunk_uploads", "chunk uploads by result (new, present)", ["result"], registry=r
        )
        self.upload_bytes = Counter(
            "wreg_chunk_upload_raw_bytes",
            "raw bytes of uploaded chunks by result (new, present)",
            ["result"],
            registry=r,
        )

        self.downloads = Counter(
            "wreg_chunk_downloads",
            "chunks the download hot path answered, by how the body went "
            "(single GETs: zerocopy, pathsend, read; batched fetches: zerocopy-batch)",
            ["path"],
            registry=r,
        )

    # -- what the domain reports ----------------------------------------------------

    def missing_query(self, queried: int, missing: int, present_bytes: int) -> None:
        self.queried.inc(queried)
        self.missing.inc(missing)
        self.present_bytes.inc(present_bytes)

    def chunk_upload(self, new: bool, raw_size: int) -> None:
        result = "new" if new else "present"
        self.uploads.labels(result).inc()
        self.upload_bytes.labels(result).inc(raw_size)

    # -- exposition --------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NoMetrics(Metrics):
    """What ``current()`` returns outside a request: counts into a throwaway registry."""


_current: ContextVar[Metrics | None] = ContextVar("wreg_metrics", default=None)
_fallback: Metrics | None = None


def current() -> Metrics:
    """The metrics of the request being served, or a sink nobody reads."""
    global _fallback
    found = _current.get()
    if found is not None:
        return found
    if _fallback is None:
        _fallback = _NoMetrics()
    return _fallback


def bind(metrics: Metrics) -> object:
    """Make ``metrics`` current for this context; returns a token for ``unbind``."""
    return _current.set(metrics)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def gc_registry(result: GcResult, finished_at: float) -> CollectorRegistry:
    """Gauges describing one GC run, for the textfile collector."""
    r = CollectorRegistry()
    fields = {
        "wreg_gc_last_run_timestamp_seconds": ("when the last GC run finished", finished_at),
        "wreg_gc_last_run_duration_seconds": ("how long it took", result.duration_s),
        "wreg_gc_last_run_dry_run": ("1 if it was a dry run", float(result.dry_run)),
        "wreg_gc_last_run_chunks_deleted": ("chunks deleted", result.chunks_deleted),
        "wreg_gc_last_run_bytes_freed": ("stored bytes freed", result.bytes_freed),
        "wreg_gc_last_run_raw_bytes_freed": ("raw bytes freed", result.raw_bytes_freed),
        "wreg_gc_last_run_chunks_kept_in_grace": (
            "unreferenced chunks kept because they are younger than the grace period",
            result.chunks_in_grace,
        ),
    }
    for name, (doc, value) in fields.items():
        Gauge(name, doc, registry=r).set(value)
    return r
