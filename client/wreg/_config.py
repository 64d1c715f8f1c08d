"""Client settings, read once from the environment (``WREG_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8080"


def parse_uids(text: str) -> list[int]:
    """``"1001, 1002"`` -> ``[1001, 1002]`` (``WREG_CACHE_TRUSTED_UIDS``); raises
    ``ValueError`` on anything else."""
    return [int(u) for u in text.replace(",", " ").split()]


class ClientSettings(BaseSettings):
    """``WREG_URL``, ``WREG_TOKEN``, ``WREG_CACHE``, ``WREG_CONCURRENCY``, ``WREG_TIMEOUT``,
    ``WREG_INFLIGHT_BYTES``, ``WREG_OFFLINE``, ``WREG_CACHE_SHARED``,
    ``WREG_CACHE_TRUSTED_UIDS``."""

    model_config = SettingsConfigDict(env_prefix="WREG_", extra="ignore")

    url: str = DEFAULT_URL
    token: str | None = None
    cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "wreg")
    concurrency: int = Field(default=16, ge=1, le=256)
    timeout: float = Field(default=60.0, gt=0)
    # Chunk bytes a push or pull holds in memory at once (buffers allocated once, reused).
    inflight_bytes: int = Field(default=128 << 20, ge=8 << 20)
    # Resolve tags from the node cache's refs/ and never contact the registry.
    offline: bool = False
    # private: the cache is this user's; group: shared by its group (see wreg._cache);
    # auto: group if the cache root exists group-writable and setgid.
    cache_shared: Literal["auto", "group", "private"] = "auto"
    # Uids besides yours and root's whose read-only blobs a pull uses without re-hashing.
    cache_trusted_uids: str = ""

    @field_validator("cache_trusted_uids")
    @classmethod
    def _uids(cls, value: str) -> str:
        parse_uids(value)  # raises ValueError: "comma-separated numeric uids"
        return value

    @property
    def trusted_uids(self) -> list[int]:
        return parse_uids(self.cache_trusted_uids)
