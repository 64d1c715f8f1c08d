"""Initial schema: repositories, manifests, chunks, manifest_chunks, tags.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from the models, so this revision keeps
meaning the same schema after the models move on. Written for SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DIGEST = sa.String(71)


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repositories"),
        sa.UniqueConstraint("name", name="uq_repositories_name"),
    )
    op.create_table(
        "chunks",
        sa.Column("digest", _DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_chunks"),
    )
    op.create_table(
        "manifests",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("repository_id", _ID, nullable=False),
        sa.Column("digest", _DIGEST, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_manifests"),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name="fk_manifests_repository_id_repositories",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("repository_id", "digest", name="uq_manifests_repository_id"),
    )
    op.create_table(
        "manifest_chunks",
        sa.Column("manifest_id", _ID, nullable=False),
        sa.Column("chunk_digest", _DIGEST, nullable=False),
        sa.PrimaryKeyConstraint("manifest_id", "chunk_digest", name="pk_manifest_chunks"),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name="fk_manifest_chunks_manifest_id_manifests",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chunk_digest"],
            ["chunks.digest"],
            name="fk_manifest_chunks_chunk_digest_chunks",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_manifest_chunks_chunk_digest", "manifest_chunks", ["chunk_digest"])
    op.create_table(
        "tags",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("repository_id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("manifest_id", _ID, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name="fk_tags_repository_id_repositories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name="fk_tags_manifest_id_manifests",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("repository_id", "name", name="uq_tags_repository_id"),
    )
    op.create_index("ix_tags_manifest_id", "tags", ["manifest_id"])


def downgrade() -> None:
    op.drop_index("ix_tags_manifest_id", table_name="tags")
    op.drop_table("tags")
    op.drop_index("ix_manifest_chunks_chunk_digest", table_name="manifest_chunks")
    op.drop_table("manifest_chunks")
    op.drop_table("manifests")
    op.drop_table("chunks")
    op.drop_table("repositories")
