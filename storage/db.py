"""Engine creation. SQLite in WAL mode so the poller, workers and scripts can share one file."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)


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
    # Two processes starting on a fresh DB both see "no table" and both CREATE; the loser's
    # error is harmless, and a second look finds everything in place.
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
