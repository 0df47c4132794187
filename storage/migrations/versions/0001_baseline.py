"""Baseline: the tables of SheetReel 0.1, created on a new database or completed on an older one.

Databases from before Alembic have no version table and may lack columns added over time; this
revision adds what they lack (a constant default becomes the column's DEFAULT, so rows an older
process still inserts get it too; a timestamp is filled in once), and on PostgreSQL widens the
millisecond stamps to 64 bits and turns native enum types into plain text.

Revision ID: 0001
Revises:
"""

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("storage.db")
meta = sa.MetaData()
TIME = sa.String(40)  # storage.models.AwareDateTime: UTC ISO-8601 text
STATE = sa.String(32)  # enums as text (storage.models.state_column)
NOW = object()  # filled with the migration's time, not a DEFAULT


def column(name: str, kind, default=None, nullable: bool | None = None, references: str = "", **kw) -> sa.Column:
    if nullable is None:
        nullable = default is None
    c = sa.Column(name, kind, *([sa.ForeignKey(references)] if references else []), nullable=nullable, **kw)
    c.info["default"] = default
    return c


sa.Table(
    "project", meta,
    column("id", sa.String(), primary_key=True, nullable=False),
    column("table_id", sa.String(), nullable=False, index=True),
    column("record_id", sa.String(), nullable=False),
    column("state", STATE, "pending", index=True),
    column("last_good", STATE, "pending"),
    column("mode", STATE, "auto"),
    column("title", sa.String(), ""),
    column("template", sa.String(), ""),
    column("shot_count", sa.Integer()),
    column("publish_date", sa.Date()),
    column("scene", sa.Text(), "", nullable=True),
    column("image_ref", sa.Text(), "", nullable=True),
    column("input_hash", sa.String(), ""),
    column("progress", sa.Integer(), 0),
    column("progress_text", sa.String(), ""),
    column("error", sa.Text(), "", nullable=True),
    column("notice", sa.Text(), "", nullable=True),
    column("storyboard_json", sa.Text()),
    column("final_url", sa.String()),
    column("cover_url", sa.String()),
    column("final_duration", sa.Float()),
    column("cost", sa.Float()),
    column("attempts", sa.Integer(), 0),
    column("outage_waits", sa.Integer(), 0),
    column("cleaned_at", TIME),
    column("retry_at", TIME),
    column("row_deleted", sa.Boolean(), False),
    column("advance_once", sa.Boolean(), False),
    column("action_stamp", sa.BigInteger()),
    column("takes", sa.Integer(), 0),
    column("crash_resumes", sa.Integer(), 0),
    column("version", sa.Integer(), 1, server_default="1"),
    column("created_at", TIME, NOW),
    column("updated_at", TIME, NOW),
    sa.UniqueConstraint("table_id", "record_id", name="uq_project_row"),
)
sa.Table(
    "segment", meta,
    column("project_id", sa.String(), references="project.id", primary_key=True, nullable=False),
    column("index", sa.Integer(), primary_key=True, nullable=False),
    column("state", STATE, "pending"),
    column("source", STATE, "ai"),
    column("backend", sa.String(), ""),
    column("duration", sa.Float()),
    column("url", sa.String()),
    column("drift", sa.Float()),
    column("clip", sa.String()),
    column("task", sa.Text()),
    column("cost", sa.Float()),
    column("updated_at", TIME, NOW),
)
sa.Table(
    "steprun", meta,
    column("id", sa.Integer(), primary_key=True, nullable=False),
    column("project_id", sa.String(), references="project.id", nullable=False, index=True),
    column("step", sa.String(), nullable=False),
    column("attempt", sa.Integer(), 1),
    column("host", sa.String(), ""),
    column("started_at", TIME, NOW),
    column("ended_at", TIME),
    column("ok", sa.Boolean()),
    column("outcome", STATE),
    column("error", sa.Text()),
)
sa.Table(
    "outboxentry", meta,
    column("id", sa.Integer(), primary_key=True, nullable=False),
    column("project_id", sa.String(), nullable=False, index=True),
    column("table_id", sa.String(), nullable=False),
    column("record_id", sa.String(), nullable=False, index=True),
    column("fields", sa.Text(), nullable=False),
    column("attachments", sa.Text(), "{}"),
    column("attempts", sa.Integer(), 0),
    column("next_attempt_at", TIME),
    column("last_error", sa.Text()),
    column("skipped", sa.Boolean(), False),
    column("created_at", TIME, NOW),
)
sa.Table(
    "uploadedfile", meta,
    column("sha256", sa.String(), primary_key=True, nullable=False),
    column("app_token", sa.String(), primary_key=True, nullable=False),
    column("file_token", sa.String(), nullable=False),
    column("size", sa.BigInteger(), nullable=False),
    column("created_at", TIME, NOW),
)
sa.Table(
    "cancelrequest", meta,
    column("project_id", sa.String(), primary_key=True, nullable=False),
    column("created_at", TIME, NOW),
)
sa.Table(
    "pollstate", meta,
    column("table_id", sa.String(), primary_key=True, nullable=False),
    column("watermark_ms", sa.BigInteger(), 0),
)
sa.Table(
    "notification", meta,
    column("id", sa.Integer(), primary_key=True, nullable=False),
    column("project_id", sa.String(), nullable=False, index=True),
    column("event", sa.String(), nullable=False),
    column("title", sa.String(), ""),
    column("body", sa.Text(), "", nullable=True),
    column("sent_at", TIME),
    column("attempts", sa.Integer(), 0),
    column("next_attempt_at", TIME),
    column("last_error", sa.Text()),
    column("skipped", sa.Boolean(), False),
    column("created_at", TIME, NOW),
)


def upgrade() -> None:
    conn = op.get_bind()
    present = sa.inspect(conn)
    for table in meta.sorted_tables:
        if not present.has_table(table.name):
            table.create(conn)
            continue
        columns = {c["name"]: c for c in present.get_columns(table.name)}
        for c in table.columns:
            if c.name not in columns:
                _add_column(conn, table, c)
            elif conn.dialect.name == "postgresql":
                _widen(conn, table, c, columns[c.name]["type"])
        for index in table.indexes:
            index.create(conn, checkfirst=True)
        _add_unique(conn, present, table)


def _add_column(conn, table: sa.Table, c: sa.Column) -> None:
    value = c.info["default"]
    ddl = f'ALTER TABLE "{table.name}" ADD COLUMN "{c.name}" {c.type.compile(dialect=conn.dialect)}'
    if value is not None and value is not NOW:
        ddl += f" DEFAULT {c.type.literal_processor(conn.dialect)(value)}" + ("" if c.nullable else " NOT NULL")
    conn.exec_driver_sql(ddl)
    if value is NOW:
        conn.execute(table.update().values({c.name: datetime.now(UTC).isoformat()}))
        if conn.dialect.name == "postgresql":  # SQLite cannot add NOT NULL afterwards; it is left nullable there
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN "{c.name}" SET NOT NULL')
    log.info("database column added table=%s column=%s", table.name, c.name)


def _add_unique(conn, present, table: sa.Table) -> None:
    have = {u["name"] for u in present.get_unique_constraints(table.name)} | {i["name"] for i in present.get_indexes(table.name)}
    for unique in table.constraints:
        if isinstance(unique, sa.UniqueConstraint) and unique.name not in have:
            columns = ", ".join(f'"{c.name}"' for c in unique.columns)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD CONSTRAINT "{unique.name}" UNIQUE ({columns})')
            else:  # SQLite adds no constraints to a table; a unique index enforces the same
                conn.exec_driver_sql(f'CREATE UNIQUE INDEX "{unique.name}" ON "{table.name}" ({columns})')


def _widen(conn, table: sa.Table, c: sa.Column, have) -> None:
    """What releases before Alembic created on PostgreSQL: 32-bit stamps, native enum types."""
    if isinstance(c.type, sa.BigInteger) and not isinstance(have, sa.BigInteger):
        conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN "{c.name}" TYPE BIGINT')
    elif isinstance(c.type, sa.String) and c.type.length == STATE.length and isinstance(have, sa.Enum):
        conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN "{c.name}" TYPE VARCHAR(32) USING "{c.name}"::text')
    else:
        return
    log.info("database column widened table=%s column=%s", table.name, c.name)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not removed; restore a backup to go back")
