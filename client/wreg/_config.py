"""Client settings, read once from the environment (``WREG_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientSettings(BaseSettings):
    """``WREG_URL``, ``WREG_TOKEN``, ``WREG_CACHE``, ``WREG_CONCURRENCY``, ``WREG_TIMEOUT``,
    ``WREG_INFLIGHT_BYTES``, ``WREG_OFFLINE``."""

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
