"""Opening a database written by an older release: new columns appear, old rows keep working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.db import make_engine, sqlite_url
from storage.models import Project, ProjectState, Segment
from storage.projects import ProjectStore


def test_an_older_database_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path, caplog):
    store = ProjectStore(make_engine(sqlite_url(tmp_path)), tmp_path)
    project = Project(id="p1", table_id="t", record_id="rec1", title="猫", template="pet-eating",
                      state=ProjectState.completed)
    store.save(project, [Segment(project_id="p1", index=0, backend="kenburns", drift=3.5)])
    store.engine.dispose()

    # What an older release wrote: the same tables without columns added since, and no Alembic.
    db = sqlite3.connect(tmp_path / "sheetreel.db")
    db.execute("DROP TABLE alembic_version")
    for table, column in (("project", "advance_once"), ("project", "action_stamp"), ("project", "takes"),
                          ("segment", "drift"), ("segment", "updated_at")):
        db.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    db.commit()
    old_columns = [row[1] for row in db.execute('PRAGMA table_info("project")')]
    db.close()

    with caplog.at_level("INFO", logger="storage.db"):
        store = ProjectStore(make_engine(sqlite_url(tmp_path)), tmp_path)
    assert "database column added table=segment column=drift" in caplog.text
    p = store.get("p1")
    assert (p.title, p.state, p.advance_once, p.action_stamp, p.takes) == ("猫", ProjectState.completed, False, None, 0)
    [seg] = store.segments("p1")
    assert seg.backend == "kenburns" and seg.drift is None and seg.updated_at.tzinfo is not None
    # An older process still running inserts a row the way it knows: the new columns get
    # their defaults from the database itself.
    db = sqlite3.connect(tmp_path / "sheetreel.db")
    copied = ", ".join("'p2'" if c == "id" else "'rec2'" if c == "record_id" else f'"{c}"' for c in old_columns)
    db.execute(f'INSERT INTO project ({", ".join(old_columns)}) SELECT {copied} FROM project WHERE id = \'p1\'')
    db.commit()
    db.close()
    p2 = store.get("p2")
    assert (p2.takes, p2.advance_once, p2.title) == (0, False, "猫")

    # And it takes writes as usual; opening it again changes nothing.
    p.advance_once = True
    store.save(p)
    store = ProjectStore(make_engine(sqlite_url(tmp_path)), tmp_path)
    assert store.get("p1").advance_once is True
