"""Server settings, read once from the environment (prefix ``WREG_``).

Every knob has a default that runs a single-node registry out of ``./wreg-data``; tests
build ``ServerSettings(...)`` explicitly and pass it to ``create_app`` instead of touching
the environment. Limits default to the shared values in ``wreg.core.sizes`` so client and
server agree; they are settings only so tests (and cautious operators) can lower them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wreg.core import sizes


class ServerSettings(BaseSettings):
    """Configuration of one server process."""

    model_config = SettingsConfigDict(env_prefix="WREG_", frozen=True)

    data: Path = Field(default=Path("wreg-data"), description="data directory")
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data>/index.sqlite",
    )
    store: str = Field(default="file", description="object store backend: file | memory")
    store_path: Path | None = Field(
        default=None, description="root of the file object store; default <data>/objects"
    )
    store_fsync: bool = Field(default=True, description="fsync objects before publishing")
    migrate_on_start: bool = Field(
        default=True, description="apply migrations on start (SQLite only)"
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


@lru_cache(maxsize=1)
def get_settings() -> ServerSettings:
    """The process-wide settings, read from the environment on first use."""
    return ServerSettings()
