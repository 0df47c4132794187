"""Chat cards show the finished video's cover and a button to the row.

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
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("notification")}
    with op.batch_alter_table("notification") as table:
        for name in ("image", "link"):
            if name not in have:
                table.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification") as table:
        table.drop_column("link")
        table.drop_column("image")
