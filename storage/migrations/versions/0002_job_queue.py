"""The job queue of the scale-out mode: procrastinate's tables and functions, on PostgreSQL only.

procrastinate keeps its jobs in the database that is already the truth, so a job is deferred in
the transaction of the state change that makes it due. Its schema is applied here, under the
migration lock, rather than by `procrastinate schema --apply` (which two starting hosts would race
on). A later procrastinate release's delta files become later revisions; the version is pinned.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql" or sa.inspect(conn).has_table("procrastinate_jobs"):
        return
    try:
        from procrastinate.schema import SchemaManager
    except ImportError as e:
        from storage.errors import DatabaseUnusable

        raise DatabaseUnusable(f"PostgreSQL needs procrastinate ({e}): pip install 'sheetreel[postgres]'") from None
    # Straight to the driver: the schema is many statements and holds literal % signs.
    conn.connection.driver_connection.execute(SchemaManager.get_schema())


def downgrade() -> None:
    raise NotImplementedError("the job queue is not removed; restore a backup to go back")
