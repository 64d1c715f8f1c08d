"""file_hashes and lfs_objects: the Hugging Face API's sha256 ETags and LFS uploads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

New tables only: ``file_hashes`` is filled after commits and by the mirror and HF
uploads, ``lfs_objects`` by LFS uploads; see ``wreg_server/db/models.py`` (``FileHash``,
``LfsObject``).
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
    op.create_table(
        "lfs_objects",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "sha256", name="pk_lfs_objects"),
    )


def downgrade() -> None:
    op.drop_table("lfs_objects")
    op.drop_table("file_hashes")
