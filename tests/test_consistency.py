"""Real disagreements between DB, meta.json, files and the sheet: reported precisely, repaired,
and a second verify is clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlmodel import delete

from storage import atomic
from storage.models import OutboxEntry, Project, ProjectState, Segment, StepRun
from sync import lifecycle
from sync.cli import main

from conftest import Sheet


@pytest.fixture
def six(sheet: Sheet, monkeypatch):
    sheet.use_env(monkeypatch)
    cols = sheet.cols
    rids = sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                            cols.shot_count: 2} for i in range(6)])
    app = sheet.app()
    app.once()
    return sheet, app, [app.store.by_record(sheet.table_id, r) for r in rids]


def run(capsys, *args) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.databases  # also on PostgreSQL
def test_verify_reports_each_disagreement_fix_repairs_and_a_second_verify_is_clean(six, capsys):
    sheet, app, (a, b, c, d, e, f) = six
    store, cols = app.store, sheet.cols
    assert run(capsys, "verify-consistency")[0] == 0


    def copies(path):
        """The file, and on PostgreSQL (several hosts) its copy in the object store, which verify reads."""
        stored = sheet.settings.public_dir / path.relative_to(sheet.settings.data_dir / "projects")
        return [path, stored] if store.mirror is not None else [path]

    for path in copies(store.paths(a).segment(1)):                        # a deleted segment file
        path.unlink()
    for meta_path in copies(store.paths(b).meta):                         # meta.json edited by hand
        edited = json.loads(meta_path.read_text())
        edited["project"]["state"] = "failed"
        meta_path.write_text(json.dumps(edited))
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, c.record_id, {cols.status: "失败"})  # a user edits a system cell
    with store.session() as s:                                            # a DB row deleted
        for table in (Segment, StepRun):
            s.exec(delete(table).where(table.project_id == d.id))
        s.exec(delete(Project).where(Project.id == d.id))
        s.commit()
    # an outbox write lost
    app.life.commit(e.id, lambda q: (setattr(q, "progress_text", "人工改动"), lifecycle.resync(q))[1])
    with store.session() as s:
        s.exec(delete(OutboxEntry))
        s.commit()
    sheet.emu.delete_record(sheet.app_token, sheet.table_id, f.record_id)  # a row deleted in the sheet

    code, lines = run(capsys, "verify-consistency")
    assert code == 3  # differences found
    assert f"{a.id} {a.record_id} files.segment2: db=present files=missing" in lines
    assert f"{b.id} {b.record_id} meta.state: db=completed meta=failed" in lines
    assert f"{c.id} {c.record_id} sheet.状态: db=已完成 sheet=失败" in lines
    assert any(line.startswith(f"{d.id} {d.record_id} db.row: db=missing meta.json=") for line in lines)
    assert f"{e.id} {e.record_id} sheet.进度: db=100% 人工改动 sheet=100% 已完成" in lines
    assert f"{f.id} {f.record_id} sheet.row: db=present sheet=deleted" in lines

    code, plan = run(capsys, "verify-consistency", "--fix", "--dry-run")
    assert code == 3 and any(f"plan: {a.id}: send the project back" in line for line in plan)
    assert run(capsys, "verify-consistency")[0] == 3  # the dry run changed nothing

    code, fixed = run(capsys, "verify-consistency", "--fix")
    assert any(f"fixed: {d.id}: restored from meta.json" == line for line in fixed)
    assert any(line.startswith(f"fixed: {a.id}: back to storyboard_ready") for line in fixed)
    code, lines = run(capsys, "verify-consistency")
    assert code == 0, lines

    # The project sent back regenerates what was missing, and everything still agrees.
    app.once()
    assert store.get(a.id).state == ProjectState.completed
    assert store.paths(a).segment(1).is_file()
    assert run(capsys, "verify-consistency")[0] == 0


def test_compare_lists_rows_the_db_never_saw(six, capsys):
    sheet, app, projects = six
    (stranger,) = sheet.add_rows([{sheet.cols.title: "新行"}])
    code, lines = run(capsys, "compare-feishu-and-db")
    assert code == 3 and f"row never seen by the DB: {stranger}" in lines


@pytest.mark.databases  # also on PostgreSQL
def test_migrate_rebuilds_the_db_reports_conflicts_and_is_idempotent(six, capsys):
    sheet, app, projects = six
    store = app.store
    newer = projects[0]
    newer.progress_text = "DB 更新过"
    with store.session() as s:  # the DB moves on without meta.json (as if meta was restored from a backup)
        s.merge(newer)
        s.commit()
    with store.session() as s:
        s.exec(delete(Segment).where(Segment.project_id == projects[1].id))
        s.exec(delete(StepRun).where(StepRun.project_id == projects[1].id))
        s.exec(delete(Project).where(Project.id == projects[1].id))
        s.commit()
    code, lines = run(capsys, "migrate-local-to-db", "--json")
    report = json.loads("\n".join(lines))
    assert code == 1 and report["restored"] == [projects[1].id]
    assert len(report["conflicts"]) == 1 and report["conflicts"][0].startswith(f"{projects[0].id}: DB is newer")
    assert store.get(projects[0].id).progress_text == "DB 更新过"
    code, lines = run(capsys, "migrate-local-to-db", "--json")
    assert json.loads("\n".join(lines))["restored"] == []


def test_reset_stuck_and_cleanup(six, capsys):
    sheet, app, projects = six
    store = app.store
    stuck = projects[0]
    stuck.state = ProjectState.generating
    store.save(stuck)
    code, lines = run(capsys, "reset-stuck", "--dry-run")
    assert lines == [f"{stuck.id}: generating -> storyboard_ready"] and store.get(stuck.id).state == ProjectState.generating
    run(capsys, "reset-stuck")
    assert store.get(stuck.id).state == ProjectState.storyboard_ready

    code, lines = run(capsys, "cleanup", "--days", "0", "--dry-run")
    assert lines[-1].startswith("5 projects, would free")
    assert store.paths(projects[1]).segments.is_dir()
    run(capsys, "cleanup", "--days", "0")
    paths = store.paths(projects[1])
    assert not paths.segments.exists() and not paths.frames.exists()
    assert paths.final_video.is_file() and paths.cover.is_file() and paths.meta.is_file()


def test_inspect_and_health(six, capsys):
    code, lines = run(capsys, "inspect-db", "--json")
    view = json.loads("\n".join(lines))
    assert view["by_state"] == {"completed": 6} and view["outbox_backlog"] == 0
    code, lines = run(capsys, "health", "--json")
    assert code == 0 and json.loads("\n".join(lines))["checks"]["sheet"]["ok"] is True
    code, lines = run(capsys, "health", "--max-backlog", "-1")
    assert code == 1 and any(line.startswith("FAIL outbox") for line in lines)


def test_cleanup_then_verify_finds_nothing_to_repair_and_a_redo_still_works(six, capsys):
    sheet, app, projects = six
    assert run(capsys, "cleanup", "--days", "0")[0] == 0
    first = app.store.get(projects[0].id)
    assert first.cleaned_at is not None and not app.store.paths(first).segments.exists()
    code, lines = run(capsys, "verify-consistency")
    assert code == 0, lines  # the intermediates went on purpose: nothing to regenerate
    run(capsys, "verify-consistency", "--fix")
    assert all(app.store.get(p.id).state == ProjectState.completed for p in projects)

    # 重做第2段 on a cleaned project makes what it needs again.
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, first.record_id, {sheet.cols.action: "重做第2段"})
    app.once()
    again = app.store.get(first.id)
    assert again.state == ProjectState.completed and again.cleaned_at is None, again.error
    assert app.store.paths(again).segment(1).is_file()


def test_cleanup_counts_what_went_and_names_what_it_could_not_remove(six, capsys, monkeypatch):
    sheet, app, projects = six
    stubborn = app.store.paths(projects[0]).segments
    remove = shutil.rmtree

    def rmtree(path, ignore_errors=False):  # as a file under `chattr +i` or on a read-only mount
        if Path(path) != stubborn:
            remove(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    code, lines = run(capsys, "cleanup", "--days", "0", "--json")
    report = json.loads("\n".join(lines))
    kept = next(i for i in report["items"] if i["path"] == str(stubborn))
    assert code == 1 and kept["bytes"] == 0 and kept["left"].startswith("could not be removed")
    assert report["bytes"] == sum(i["bytes"] for i in report["items"]) and stubborn.is_dir()


def test_fix_repairs_every_project_it_can_when_one_folder_cannot_be_written(six, capsys, monkeypatch):
    sheet, app, projects = six
    for p in projects:
        app.store.paths(p).meta.unlink()
    locked = app.store.paths(projects[0]).root
    write = atomic.write_bytes

    def write_bytes(path, data):
        if Path(path).is_relative_to(locked):
            raise PermissionError(13, "Permission denied", str(path))
        write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    code, lines = run(capsys, "verify-consistency", "--fix", "--no-sheet")
    assert code == 3 and any(f"{projects[0].id}: not repaired" in line and "Permission denied" in line for line in lines)
    assert all(app.store.paths(p).meta.is_file() for p in projects[1:])
