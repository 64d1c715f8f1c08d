"""file_hashes: the sha256 of each file identity, for the Hugging Face API's ETags.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A new table only, filled after commits and by the mirror and HF uploads; see
``wreg_server/db/models.py`` (``FileHash``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "file_hashes",
        sa.Column("identity", sa.String(71), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity", name="pk_file_hashes"),
    )


def downgrade() -> None:
    op.drop_table("file_hashes")
