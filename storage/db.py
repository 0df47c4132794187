"""Engine creation: SQLite in WAL mode for one host (poller, workers and scripts share one file),
PostgreSQL (psycopg 3) for several. Opening a database brings its schema up to date."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlmodel import create_engine

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from storage.errors import DatabaseUnusable
from storage.migrate import upgrade


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'sheetreel.db'}"


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    """Create the engine and migrate the schema. Any SQLAlchemy URL with an installed driver works."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise DatabaseUnusable(f"SHEETREEL_DATABASE_URL is not a database URL: {make_url_safe(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseUnusable(f"cannot make the folder of {parsed.database}: {e.strerror}") from None
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except (ModuleNotFoundError, NoSuchModuleError) as e:
            hint = " (pip install 'sheetreel[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
            raise DatabaseUnusable(f"no driver for {parsed.drivername}: {e}{hint}") from None
    upgrade(engine)
    return engine


def make_url_safe(url: str) -> str:
    """The URL as it may be shown: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@")[-1] if "@" in url else url


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
