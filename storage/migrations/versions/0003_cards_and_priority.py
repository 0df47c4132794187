"""Chat cards show the finished video's cover and a button to the row; rows have a priority;
the time each piece of work took is kept, for the estimate in 进度.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspect = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspect.get_columns("notification")}
    with op.batch_alter_table("notification") as table:
        for name in ("image", "link"):
            if name not in have:
                table.add_column(sa.Column(name, sa.Text(), nullable=True))
    if "priority" not in {c["name"] for c in inspect.get_columns("project")}:
        with op.batch_alter_table("project") as table:
            table.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    if not inspect.has_table("timing"):
        op.create_table(
            "timing",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("work", sa.String(), nullable=False),
            sa.Column("backend", sa.String(), nullable=False),
            sa.Column("host", sa.String(), nullable=False),
            sa.Column("media_seconds", sa.Float(), nullable=False),
            sa.Column("wall_seconds", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.String(40), nullable=False),
        )
        op.create_index("ix_timing_work", "timing", ["work"])


def downgrade() -> None:
    op.drop_table("timing")
    with op.batch_alter_table("project") as table:
        table.drop_column("priority")
    with op.batch_alter_table("notification") as table:
        table.drop_column("link")
        table.drop_column("image")
