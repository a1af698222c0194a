"""day rollups are gone: a single day is read from its observations

A day rollup held about what its observations hold (most series have one value a day), so it
doubled what an import writes for little a query gains. Week and month rollups stay; a period of
odd days reads the observations themselves (see kpi.aggregate).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 23:30:00.000000
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM rollup WHERE grain = 'day'")


def downgrade() -> None:
    op.execute(
        """
INSERT INTO rollup (grain, series_id, start, total, count, minimum, maximum, last_ts, last_value)
SELECT 'day', a.series_id, a.day, a.total, a.n, a.lo, a.hi, a.last_ts,
       (SELECT o.value FROM observation o WHERE o.series_id = a.series_id AND o.ts = a.last_ts)
FROM (
    SELECT series_id, day, sum(value) AS total, count(*) AS n,
           min(value) AS lo, max(value) AS hi, max(ts) AS last_ts
    FROM observation GROUP BY series_id, day
) a
"""
    )
