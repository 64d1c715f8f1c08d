"""retention_policies, and manifests.pushed_by (the token name that committed it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A new table and a nullable column: existing manifests keep ``pushed_by`` NULL (unknown).
See ``wreg_server/db/models.py`` (``RetentionPolicy``, ``ManifestRow``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("pushed_by", sa.String(128), nullable=True))
    op.create_table(
        "retention_policies",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("keep", sa.BigInteger(), nullable=False),
        sa.Column("match", sa.String(128), nullable=False),
        sa.Column("protect", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", name="pk_retention_policies"),
    )


def downgrade() -> None:
    op.drop_table("retention_policies")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("pushed_by")
