"""Garbage-collection columns on chunks: last_seen_at, gc_pending_since.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Both columns are nullable, so adding them is a plain ``ALTER TABLE ADD COLUMN`` on SQLite
and PostgreSQL alike (no table rebuild, no data migration), and a replica still running
the previous release keeps inserting rows that the collector reads correctly: a ``NULL``
``last_seen_at`` means "use ``created_at``", a ``NULL`` ``gc_pending_since`` means live.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "chunks", sa.Column("gc_pending_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_chunks_gc_pending_since", "chunks", ["gc_pending_since"])


def downgrade() -> None:
    op.drop_index("ix_chunks_gc_pending_since", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("gc_pending_since")
        batch.drop_column("last_seen_at")
