"""Request and response bodies of the JSON endpoints (README: HTTP API)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MissingRequest(_Strict):
    digests: list[str]


class MissingResponse(BaseModel):
    missing: list[str]


class ChunkStored(BaseModel):
    digest: str
    size: int
    stored_size: int


class FetchRequest(_Strict):
    digests: list[str]


class BatchStored(BaseModel):
    chunks: list[ChunkStored]


class ManifestCommitted(BaseModel):
    name: str
    digest: str
    tag: str | None


class TagRequest(_Strict):
    digest: str


class TagOut(BaseModel):
    name: str
    tag: str
    digest: str
    updated_at: datetime


class TagEntry(BaseModel):
    tag: str
    digest: str
    updated_at: datetime


class TagList(BaseModel):
    name: str
    tags: list[TagEntry]


class RepositoryEntry(BaseModel):
    name: str
    tags: list[str]
    updated_at: datetime


class RepositoryList(BaseModel):
    repositories: list[RepositoryEntry]


class Health(BaseModel):
    status: str


class TokenCreate(_Strict):
    name: str
    scopes: list[str]


class TokenOut(BaseModel):
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    name: str
    token: str
    scopes: list[str]
    created_at: datetime


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenSelf(BaseModel):
    name: str | None
    scopes: list[str]
    auth: bool


class RetentionPolicyIn(_Strict):
    keep: int = Field(strict=True, ge=1, le=100_000)
    match: str = Field(min_length=1, max_length=128)
    protect: list[str] = Field(default_factory=list, max_length=32)


class RetentionPolicyOut(BaseModel):
    keep: int
    match: str
    protect: list[str]
    updated_at: datetime | None


class RetentionState(BaseModel):
    name: str
    policy: RetentionPolicyOut | None


class RetentionVerdict(BaseModel):
    digest: str
    tags: list[str]
    created_at: datetime
    reason: str


class RetentionPlanOut(BaseModel):
    name: str
    policy: RetentionPolicyOut | None
    delete: list[RetentionVerdict]
    keep: list[RetentionVerdict]
    untouched: int
