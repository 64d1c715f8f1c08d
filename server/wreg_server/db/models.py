"""The index: what the registry knows, as tables.

    repositories ─┬─< manifests ─┬─< manifest_chunks >── chunks ──< chunk_claims
                  └─< tags ──────┘ (tag → manifest)
    tokens (bearer tokens: hashed secret, scopes; see wreg_server/auth)
    retention_policies (per repository: which manifests GC may delete; domain/retention.py)
    file_hashes (a file identity's sha256, for the Hugging Face API's ETags)
    lfs_objects (files uploaded over the HF API's LFS transfer, awaiting their commit)

``chunks`` records every chunk whose encoded bytes are in the object store (a chunk is
visible only once its row exists). ``manifest_chunks`` is the reference graph the garbage
collector marks from; it is not needed to serve manifests, whose bodies are kept verbatim.
The schema itself is owned by Alembic (``migrations/``); keep both in step.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wreg.core.digest import PREFIX
from wreg_server.db.types import BigId, UTCDateTime, utcnow

DIGEST_LENGTH = len(PREFIX) + 64  # 71: the column width of every digest
NAME_LENGTH = 255
TAG_LENGTH = 128
TOKEN_NAME_LENGTH = 128

# Deterministic constraint names, so migrations can name what they alter on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Repository(Base):
    """A model name (``team/model``); created by its first manifest commit."""

    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ManifestRow(Base):
    """A committed manifest, body kept byte-for-byte (its digest is over those bytes).

    ``Row`` because ``wreg.core.manifest.Manifest`` is the manifest itself, parsed."""

    __tablename__ = "manifests"
    __table_args__ = (UniqueConstraint("repository_id", "digest"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("repositories.id", ondelete="CASCADE")
    )
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The name of the token that committed it (NULL: auth off, or before migration 0006).
    pushed_by: Mapped[str | None] = mapped_column(String(TOKEN_NAME_LENGTH), nullable=True)


class Chunk(Base):
    """A stored chunk: raw ``size`` (what the digest covers) and encoded ``stored_size``.

    ``last_seen_at`` is the garbage collector's clock: set on upload, refreshed when an
    upload or a missing-chunks query finds the chunk present (``NULL`` in rows from before
    migration 0002 means ``created_at``). ``gc_pending_since`` marks a row the collector
    has condemned: such a row is *not live* (missing-chunks queries and manifest commits
    treat it as absent), its object may already be gone, and an upload revives it. See
    ``domain/gc.py``.
    """

    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_gc_pending_since", "gc_pending_since"),)

    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    gc_pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ManifestChunk(Base):
    """Manifest → chunk edges for GC; a chunk cannot be dropped while one points at it."""

    __tablename__ = "manifest_chunks"
    __table_args__ = (Index("ix_manifest_chunks_chunk_digest", "chunk_digest"),)

    manifest_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_digest: Mapped[str] = mapped_column(
        String(DIGEST_LENGTH), ForeignKey("chunks.digest", ondelete="RESTRICT"), primary_key=True
    )


class ChunkClaim(Base):
    """Proof of possession: chunk bytes uploaded through repository ``repository``.

    Under the repository chunk namespace a commit may reference a stored chunk only if
    a repository the pusher can pull already references it, or if its bytes were
    uploaded through the committing repository (this row). ``repository`` is a name,
    not a key: a repository exists only from its first commit, after its uploads. A row
    is dropped by the next GC run once a manifest of the repository references the chunk
    (the edge then proves it; a commit does not pay for the delete), and with its chunk
    (``ON DELETE CASCADE``); it never keeps a chunk alive (GC marks only from
    ``manifest_chunks``).
    """

    __tablename__ = "chunk_claims"
    __table_args__ = (Index("ix_chunk_claims_chunk_digest", "chunk_digest"),)

    repository: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    chunk_digest: Mapped[str] = mapped_column(
        String(DIGEST_LENGTH), ForeignKey("chunks.digest", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Tag(Base):
    """A mutable name in a repository pointing at one of its manifests."""

    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("repository_id", "name"),
        Index("ix_tags_manifest_id", "manifest_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repository_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("repositories.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(TAG_LENGTH))
    manifest_id: Mapped[int] = mapped_column(BigId, ForeignKey("manifests.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Token(Base):
    """A bearer token: its SHA-256 (never the token itself), name and scopes.

    ``scopes`` is a space-separated list of ``action:glob`` (``push:team-a/*``). Revoked
    rows are kept (``revoked_at`` set) so ``token list`` shows them; a name is unique among
    tokens not revoked, so a revoked name can be reused.
    """

    __tablename__ = "tokens"
    __table_args__ = (
        Index(
            "ix_tokens_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FileHash(Base):
    """The sha256 of a file's content, by its identity (``FileEntry.digest``).

    Hugging Face clients take a 64-hex ETag to be the file's sha256 and check local
    copies against it (``hf/``), so wreg claims one only where it computed it: from the
    verified chunks after a commit (``domain/filehashes.py``), or from bytes it received
    whole (mirror, HF uploads). Keyed by identity, which is derived from content, so one
    row serves every manifest of every repository holding the same file; a row names no
    repository and so reveals nothing to a reader who cannot read the file anyway.
    """

    __tablename__ = "file_hashes"

    identity: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LfsObject(Base):
    """A file uploaded through the Hugging Face API's LFS transfer (``hf/uploads.py``):
    its sha256, size and chunk list, for the commit that names it by sha256.

    Scoped to the repository it was uploaded through, like a chunk claim: a commit to
    another repository cannot name it. The chunks are claimed for the repository at
    upload; GC's grace period covers the time between upload and commit, and a row whose
    chunks were collected is simply uploaded again (the commit checks every chunk).
    """

    __tablename__ = "lfs_objects"

    repository: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RetentionPolicy(Base):
    """A repository's retention policy (``domain/retention.py``), applied by GC.

    Keep the newest ``keep`` manifests that carry a tag matching ``match`` (a glob), and
    every manifest carrying a tag that matches one of ``protect`` (space-separated globs);
    older manifests whose every tag matches ``match`` are deleted with their tags.
    ``repository`` is a name, not a key: a policy may be set before the first push.
    """

    __tablename__ = "retention_policies"

    repository: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    keep: Mapped[int] = mapped_column(BigInteger)
    match: Mapped[str] = mapped_column(String(TAG_LENGTH))
    protect: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
