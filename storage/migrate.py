"""Schema changes: Alembic revisions in storage/migrations, applied when a process opens the
database. Several processes (or hosts) may start at once: each takes the migration lock (an
advisory lock on PostgreSQL, a file lock beside a SQLite file), so one upgrades and the others
find the schema current."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_lock key for "migrating the SheetReel schema" (any constant; spells "SRmigrate").
MIGRATION_LOCK = 0x53526D6967726174


def alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision; a no-op (one query) when it is there already."""
    target = head()
    with _file_lock(engine), engine.connect() as conn:
        if current(conn) == target:
            return
        conn.rollback()
        with _advisory_lock(engine, conn):
            if current(conn) == target:  # another process did it while we waited
                return
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
    log.info("database schema upgraded revision=%s", target)


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: held from before the first connection, whose PRAGMA journal_mode=WAL on a new file
    would otherwise race another process's (that switch does not wait, it fails as 'locked')."""
    if engine.dialect.name == "sqlite" and engine.url.database and engine.url.database != ":memory:":
        with FileLock(f"{engine.url.database}.migrate.lock"):
            yield
    else:
        yield


@contextmanager
def _advisory_lock(engine: Engine, conn: Connection) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    # Session-level, taken on the migrating connection itself: released by the unlock below, or
    # by PostgreSQL when a killed process's connection goes away.
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        conn.commit()
