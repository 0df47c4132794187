"""Each segment keeps its file's ffprobe facts and digest, so compose does not probe every
segment again (on a small host most of a compose's CPU was ffprobe starting up).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "media" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("segment")}:
        with op.batch_alter_table("segment") as table:
            table.add_column(sa.Column("media", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segment") as table:
        table.drop_column("media")
