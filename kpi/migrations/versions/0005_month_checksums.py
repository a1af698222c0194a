"""month rollups keep a checksum of their observations

A re-import compares a file's months with it and skips looking up the rows of every month that
is unchanged (see kpi.rollups and kpi.importer). Existing month rollups get theirs computed from
the observations, once, here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 21:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rollup", sa.Column("checksum", sa.BigInteger(), nullable=True))
    # The checksum's definition lives in kpi.rollups and is frozen there: stored checksums
    # depend on it, so it cannot change without a migration of its own.
    from kpi.rollups import fill_checksums

    fill_checksums(op.get_bind())


def downgrade() -> None:
    # Plain ALTER TABLE on both (SQLite ≥ 3.35): a batch rebuild would lose WITHOUT ROWID.
    op.execute("ALTER TABLE rollup DROP COLUMN checksum")
