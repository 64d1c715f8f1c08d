"""Server settings, read once from the environment (prefix ``WREG_``).

Every knob has a default that runs a single-node registry out of ``./wreg-data``; tests
build ``ServerSettings(...)`` explicitly and pass it to ``create_app`` instead of touching
the environment. Limits default to the shared values in ``wreg.core.sizes`` so client and
server agree; they are settings only so tests (and cautious operators) can lower them.
"""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wreg.core import sizes

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` as networks (an address is its own /32 or /128).

    Raises ``ValueError`` naming the first entry that is neither.
    """
    return tuple(
        ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()
    )


class ServerSettings(BaseSettings):
    """Configuration of one server process."""

    # validate_by_name: the S3 credentials are read from the standard AWS_* variables
    # (their aliases) but tests pass them by field name.
    model_config = SettingsConfigDict(env_prefix="WREG_", frozen=True, validate_by_name=True)

    data: Path = Field(default=Path("wreg-data"), description="data directory")
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data>/index.sqlite",
    )
    database_pool_size: int = Field(
        default=10,
        gt=0,
        description="PostgreSQL connections kept per process (as many again in bursts)",
    )
    store: str = Field(default="file", description="object store backend: file | s3 | memory")
    store_path: Path | None = Field(
        default=None, description="root of the file object store; default <data>/objects"
    )
    store_fsync: bool = Field(default=True, description="fsync objects before publishing")
    s3_endpoint: str = Field(default="", description="S3 endpoint URL; default AWS")
    s3_bucket: str = Field(default="", description="S3 bucket (store=s3)")
    s3_region: str = Field(default="", description="S3 region; default AWS_REGION or us-east-1")
    s3_prefix: str = Field(default="", description="key prefix inside the bucket")
    s3_redirect: bool = Field(
        default=False, description="answer chunk GETs with a 307 to a presigned S3 URL"
    )
    s3_redirect_expires: int = Field(
        default=900, ge=60, le=7 * 24 * 3600, description="presigned URL lifetime, seconds"
    )
    s3_public_endpoint: str = Field(
        default="", description="endpoint written into presigned URLs; default s3_endpoint"
    )
    s3_access_key_id: str | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    migrate_on_start: bool = Field(
        default=True, description="apply migrations on start (SQLite only)"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="server log lines: text, or one JSON object per line"
    )
    auth: Literal["on", "off"] = Field(
        default="off",
        description="on: every API request needs a bearer token with the right scope "
        "(off suits the embedded quickstart on 127.0.0.1 only)",
    )
    anonymous_pull: bool = Field(
        default=False, description="with auth on, let requests without a token pull anything"
    )
    chunk_namespace: Literal["repository", "global"] = Field(
        default="repository",
        description="repository: a chunk is read, probed and reused only through a "
        "repository whose manifests reference it (or that the pusher uploaded it to); "
        "global: any token may read or reuse any chunk by digest, and /v1/chunks/* is "
        "served too (single-tenant registries only)",
    )
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="how long a replica trusts a verified token before asking the index "
        "again (the delay before a revocation takes effect everywhere); 0: every request",
    )
    max_connections: int = Field(
        default=512,
        gt=0,
        description="connections with a request in progress per process (beyond: 503); "
        "idle ones and ones still sending headers do not count (see serving.py)",
    )
    keep_alive_timeout: float = Field(
        default=5.0, gt=0, description="seconds an idle keep-alive connection stays open"
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds a request body may pause between pieces before it is refused; "
        "also the head start of body_min_rate",
    )
    body_min_rate: float = Field(
        default=8192,
        ge=0,
        description="bytes/s a request body must average (after a head start of "
        "body_timeout) or be refused with 408; 0: no minimum",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds from connecting (or from the previous response) until a "
        "request's headers must be complete, else the connection is closed",
    )
    max_client_connections: int = Field(
        default=64,
        gt=0,
        description="open connections per client address (IPv6: per /64); beyond, new ones "
        "are closed at once. Behind trusted_proxies: requests in progress per forwarded client",
    )
    trusted_proxies: str = Field(
        default="",
        description="comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For "
        "names the client; default none (the header is ignored)",
    )

    upstream_hf: str = Field(
        default="",
        description="pull-through mirror: an HF-compatible endpoint (https://huggingface.co, "
        "another wreg) whose repositories the HF API fetches once when asked for one it "
        "lacks; default none",
    )
    upstream_hf_token: str = Field(
        default="", description="bearer token sent to upstream_hf (gated or private repositories)"
    )
    upstream_hf_allow: str = Field(
        default="*",
        description="comma-separated fnmatch patterns of HF repository ids the mirror may "
        "fetch (case-insensitive; '*' crosses '/')",
    )
    upstream_hf_deny: str = Field(
        default="", description="comma-separated patterns never mirrored (checked after allow)"
    )
    upstream_hf_max_bytes: int = Field(
        default=1 << 40, gt=0, description="largest revision (all files) the mirror fetches"
    )
    upstream_hf_timeout: float = Field(
        default=60.0, gt=0, description="seconds an upstream request may stall"
    )

    hf_max_commit_bytes: int = Field(
        default=64 << 30,
        gt=0,
        description="largest Hugging Face commit body (files travel inline, base64); it is "
        "spooled to <data>/tmp, never held in memory",
    )

    hf_hash_on_commit: bool = Field(
        default=True,
        description="compute each new file's sha256 (the HF API's ETag) in the background "
        "after its commit; false: only when the HF API first asks for it",
    )
    hf_lfs_min_bytes: int = Field(
        default=0,
        ge=0,
        description="files at least this large are uploaded over the HF API's LFS transfer "
        "(streamed, not inline); needs clients with HF_HUB_DISABLE_XET=1; 0: every file inline",
    )
    hf_upload_secret: str = Field(
        default_factory=lambda: secrets.token_hex(32),
        description="HMAC key of the HF API's signed LFS upload URLs; replicas must share "
        "it; default: random per process",
    )

    max_chunk_raw: int = Field(default=sizes.MAX_CHUNK_RAW, gt=0)
    max_chunk_encoded: int = Field(default=sizes.MAX_CHUNK_ENCODED, gt=0)
    max_manifest_bytes: int = Field(default=sizes.MAX_MANIFEST_BYTES, gt=0)
    max_missing_query: int = Field(default=sizes.MAX_MISSING_QUERY, gt=0)
    max_json_body: int = Field(default=sizes.MAX_JSON_BODY, gt=0)
    max_batch_chunks: int = Field(
        default=sizes.MAX_BATCH_CHUNKS,
        gt=0,
        description="chunks per batched fetch or upload (.../chunks/fetch, .../chunks/upload)",
    )
    max_batch_bytes: int = Field(
        default=sizes.MAX_BATCH_BYTES,
        gt=0,
        description="encoded bytes (frames included) of a batched fetch's answer or upload's body",
    )
    large_batches: bool = Field(
        default=True,
        description="tell clients (x-wreg-large-batches) that batched fetches of large "
        "chunks cost no more than single GETs here (file store: sent with sendfile); off "
        "when an HTTP cache or CDN in front serves the single GETs (deploy/nginx-cache.conf "
        "drops the header itself)",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_database_url(cls, values: object) -> object:
        """Fill ``database_url`` from ``data`` when it was not given.

        Done before validation because the model is frozen; the path is made absolute so
        the URL keeps meaning the same file if the process changes directory.
        """
        if isinstance(values, dict) and not values.get("database_url"):
            data = Path(values.get("data") or Path("wreg-data")).absolute()
            values = {**values, "database_url": f"sqlite+aiosqlite:///{data / 'index.sqlite'}"}
        return values

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)  # a typo must stop the server, not trust nobody (or everybody)
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def objects_path(self) -> Path:
        return self.store_path if self.store_path is not None else self.data / "objects"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (``WREG_MAX_CONNECTIONS`` for
    ``max_connections``)."""
    info = ServerSettings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else f"WREG_{field.upper()}"


# Fields whose values an error message must not echo.
_SECRET_FIELDS = frozenset({"s3_secret_access_key", "upstream_hf_token", "hf_upload_secret"})


def explain(exc: ValidationError) -> str:
    """``exc`` as one line naming each bad variable, its value and what it accepts:
    ``WREG_LOG_FORMAT='xml': input should be 'text' or 'json'``."""
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields: its message names them
            parts.append(message)
            continue
        value = "<hidden>" if field in _SECRET_FIELDS else repr(error["input"])
        parts.append(f"{env_name(field)}={value}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> ServerSettings:
    """The process-wide settings, read from the environment on first use."""
    return ServerSettings()
