"""Repository-scoped chunks: chunk_claims (proof of possession per repository).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A new table only. Rows are written by uploads through ``/v1/repositories/{name}/chunks``
and dropped with their chunk (``ON DELETE CASCADE``) or by GC once a manifest of the
repository references the chunk; see ``wreg_server/db/models.py`` (``ChunkClaim``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "chunk_claims",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("chunk_digest", sa.String(71), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chunk_digest"],
            ["chunks.digest"],
            name="fk_chunk_claims_chunk_digest_chunks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository", "chunk_digest", name="pk_chunk_claims"),
    )
    op.create_index("ix_chunk_claims_chunk_digest", "chunk_claims", ["chunk_digest"])


def downgrade() -> None:
    op.drop_index("ix_chunk_claims_chunk_digest", table_name="chunk_claims")
    op.drop_table("chunk_claims")
