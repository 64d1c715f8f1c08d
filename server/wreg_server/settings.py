"""Server settings, read once from the environment (prefix ``WREG_``).

Every knob has a default that runs a single-node registry out of ``./wreg-data``; tests
build ``ServerSettings(...)`` explicitly and pass it to ``create_app`` instead of touching
the environment. Limits default to the shared values in ``wreg.core.sizes`` so client and
server agree; they are settings only so tests (and cautious operators) can lower them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wreg.core import sizes


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
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="how long a replica trusts a verified token before asking the index "
        "again (the delay before a revocation takes effect everywhere); 0: every request",
    )
    max_connections: int = Field(
        default=512, gt=0, description="concurrent connections per process (beyond: 503)"
    )
    keep_alive_timeout: float = Field(
        default=5.0, gt=0, description="seconds an idle keep-alive connection stays open"
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds a request body may pause between pieces before it is refused",
    )

    max_chunk_raw: int = Field(default=sizes.MAX_CHUNK_RAW, gt=0)
    max_chunk_encoded: int = Field(default=sizes.MAX_CHUNK_ENCODED, gt=0)
    max_manifest_bytes: int = Field(default=sizes.MAX_MANIFEST_BYTES, gt=0)
    max_missing_query: int = Field(default=sizes.MAX_MISSING_QUERY, gt=0)
    max_json_body: int = Field(default=sizes.MAX_JSON_BODY, gt=0)

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

    @property
    def objects_path(self) -> Path:
        return self.store_path if self.store_path is not None else self.data / "objects"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"


@lru_cache(maxsize=1)
def get_settings() -> ServerSettings:
    """The process-wide settings, read from the environment on first use."""
    return ServerSettings()
