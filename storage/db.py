"""Engine creation. SQLite in WAL mode so the poller, workers and scripts can share one file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic_core import PydanticUndefined
from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.sql.sqltypes import SchemaType
from sqlmodel import SQLModel, create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)

log = logging.getLogger(__name__)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'sheetreel.db'}"


def make_engine(url: str) -> Engine:
    """Create the engine and the tables. Any SQLAlchemy URL works (Postgres for several hosts)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _create_tables(engine)
    return engine


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    # Two processes starting on a fresh (or older) DB both see "no table" ("no column") and both
    # add it; the loser's error (OperationalError; ProgrammingError on Postgres) is harmless, and
    # a second look finds everything in place.
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            with engine.begin() as conn:
                add_missing_columns(conn)
            return
        except (OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def add_missing_columns(conn: Connection) -> None:
    """Bring a database written by an older SheetReel up to the current models.

    create_all makes missing tables but leaves existing ones alone; every column a release adds
    is added here. A constant model default becomes the column's DEFAULT (NOT NULL), so rows an
    older process still inserts get it too; a computed one (a timestamp) is filled in once, the
    column left nullable, as SQLite cannot add NOT NULL without a constant.
    """
    present = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        if not present.has_table(table.name):
            continue
        have = {c["name"] for c in present.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in have]
        for column in missing:
            if isinstance(column.type, SchemaType):  # a Postgres enum type must exist first
                column.type.create(conn, checkfirst=True)
            value, constant = _model_default(table.name, column.name)
            ddl = f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {column.type.compile(dialect=conn.dialect)}'
            literal = column.type.literal_processor(conn.dialect) if constant and value is not None else None
            if literal is not None:
                ddl += f" NOT NULL DEFAULT {literal(value)}"
            conn.exec_driver_sql(ddl)
            if literal is None and value is not None:
                conn.execute(table.update().values({column.name: value}))
            log.info("database column added table=%s column=%s", table.name, column.name)
        for index in table.indexes if missing else ():  # an index on a column just added
            index.create(conn, checkfirst=True)


def _model_default(table: str, column: str) -> tuple[object, bool]:
    """The value a new instance of the table's model gets for `column` (None if none), and
    whether it is a constant rather than computed per instance."""
    for mapper in SQLModel._sa_registry.mappers:
        if mapper.local_table.name == table and column in mapper.class_.model_fields:
            info = mapper.class_.model_fields[column]
            if info.default_factory is not None:
                return info.default_factory(), False
            return (None if info.default is PydanticUndefined else info.default), True
    return None, False


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
