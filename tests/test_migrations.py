"""The schema: Alembic revisions that match the models, safe when several processes start at once,
and that bring a database written by an older release up to date on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

from storage.db import make_engine, normalize_url
from storage.errors import DatabaseUnusable
from storage.migrate import current, head
from storage.models import ProjectState
from storage.stores import Stores

pytestmark = pytest.mark.databases
ROOT = Path(__file__).resolve().parent.parent
MS_2026 = 1_796_000_000_000  # a millisecond timestamp: far past 2**31


def schema_diff(conn) -> list:
    """What the models describe and the database lacks or has besides (procrastinate's own tables
    are its business, applied by revision 0002)."""
    def ours(name, type_, parent_names) -> bool:
        return not (name or "").startswith("procrastinate") and not (parent_names.get("table_name") or "").startswith("procrastinate")

    return compare_metadata(MigrationContext.configure(conn, opts={"include_name": ours}), SQLModel.metadata)


def url_for(database_url: str, tmp_path: Path) -> str:
    return database_url or f"sqlite:///{tmp_path / 'sheetreel.db'}"


def test_the_migrations_build_exactly_the_tables_the_models_describe(database_url, tmp_path):
    engine = make_engine(url_for(database_url, tmp_path))
    with engine.connect() as conn:
        assert schema_diff(conn) == []
        assert current(conn) == head()


def test_six_processes_opening_a_fresh_database_at_once_all_start(database_url, tmp_path):
    url = url_for(database_url, tmp_path)
    # Each child imports everything, says it is ready, and opens the database when stdin closes,
    # so all six reach the migration together.
    code = ("import sys; from storage.db import make_engine; print('ready', flush=True); sys.stdin.read(); "
            "e = make_engine(sys.argv[1]); print('ok', flush=True)")
    children = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.close()
        child.stdin = None  # closed on purpose: communicate() must not flush it
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * 6, [err[-2000:] for _, err in results]
    assert all(out.strip() == "ok" for out, _ in results)
    stores = Stores.open(make_engine(url), tmp_path)
    stores.sync.set_watermark("tbl", MS_2026)
    assert stores.sync.watermark("tbl") == MS_2026


def test_an_older_database_is_completed_and_its_stamps_hold_milliseconds(database_url, tmp_path):
    url = url_for(database_url, tmp_path)
    # What a release before Alembic left behind: a project table without the newer columns, a
    # 32-bit stamp, and on PostgreSQL a native enum type for the state.
    old = create_engine(normalize_url(url))
    state = "VARCHAR(14)"
    with old.begin() as conn:
        if old.dialect.name == "postgresql":
            conn.exec_driver_sql("CREATE TYPE projectstate AS ENUM ('pending', 'completed', 'failed')")
            state = "projectstate"
        conn.exec_driver_sql("CREATE TABLE pollstate (table_id VARCHAR PRIMARY KEY, watermark_ms INTEGER NOT NULL)")
        conn.exec_driver_sql(f"CREATE TABLE project (id VARCHAR PRIMARY KEY, table_id VARCHAR NOT NULL, "
                             f"record_id VARCHAR NOT NULL, state {state} NOT NULL, title VARCHAR NOT NULL, "
                             f"action_stamp INTEGER, version INTEGER NOT NULL DEFAULT 1)")
        conn.exec_driver_sql("INSERT INTO project (id, table_id, record_id, state, title) "
                             "VALUES ('p1', 'tbl', 'rec1', 'completed', '猫')")
    old.dispose()

    engine = make_engine(url)
    stores = Stores.open(engine, tmp_path)
    p = stores.projects.get("p1")
    assert (p.title, p.state, p.takes, p.advance_once, p.template) == ("猫", ProjectState.completed, 0, False, "")
    assert p.created_at.tzinfo is not None
    stores.projects.update("p1", lambda q, _segs: setattr(q, "action_stamp", MS_2026) or _no_effects())
    stores.sync.set_watermark("tbl", MS_2026)
    assert stores.projects.get("p1").action_stamp == MS_2026 and stores.sync.watermark("tbl") == MS_2026
    # A state the old enum type did not know is stored as text now.
    stores.projects.update("p1", lambda q, _segs: setattr(q, "state", ProjectState.storyboarding) or _no_effects())
    assert stores.projects.get("p1").state == ProjectState.storyboarding
    assert "segment" in inspect(engine).get_table_names()
    # Opening it again finds it current. (SQLite cannot change a column's declared type, nor
    # needs to: its INTEGER is 64-bit and its VARCHAR unbounded.)
    with make_engine(url).connect() as conn:
        assert current(conn) == head()
        if conn.dialect.name == "postgresql":
            assert schema_diff(conn) == []


def _no_effects():
    from storage.projects import Effects

    return Effects()


def test_a_database_url_without_its_driver_or_malformed_is_one_sentence(tmp_path):
    with pytest.raises(DatabaseUnusable, match="no driver for mysql"):
        make_engine("mysql://u:secret@127.0.0.1/db")
    with pytest.raises(DatabaseUnusable, match="not a database URL") as e:
        make_engine("not a url")
    assert "secret" not in str(e.value)
