"""Engine creation. SQLite in WAL mode so the poller, workers and scripts can share one file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic_core import PydanticUndefined
from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
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
    # add it; the loser's error is harmless, and a second look finds everything in place.
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            with engine.begin() as conn:
                add_missing_columns(conn)
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def add_missing_columns(conn: Connection) -> None:
    """Bring a database written by an older SheetReel up to the current models.

    create_all makes missing tables but leaves existing ones alone; every column a release adds
    is added here, filled with its model default, so old rows read back as they always did.
    New columns are nullable (SQLite cannot add NOT NULL without a constant default) -- the
    models always write a value.
    """
    present = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        if not present.has_table(table.name):
            continue
        have = {c["name"] for c in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
            default = _model_default(table.name, column.name)
            if default is not None:
                conn.execute(table.update().values({column.name: default}))
            log.info("database column added table=%s column=%s", table.name, column.name)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _model_default(table: str, column: str) -> object:
    """The value a new instance of the table's model gets for `column`; None if it has none."""
    for mapper in SQLModel._sa_registry.mappers:
        if mapper.local_table.name == table and column in mapper.class_.model_fields:
            info = mapper.class_.model_fields[column]
            if info.default_factory is not None:
                return info.default_factory()
            return None if info.default is PydanticUndefined else info.default
    return None


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
