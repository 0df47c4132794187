"""Each lost update that the old code had, reproduced by pausing at the point where it happened.

The outcomes asserted are the user's: the row's cells, the chat messages owed, how often a step
ran. None of these may depend on timing: threads wait on Events with generous timeouts.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import select

from pipeline import compose as compose_module
from storage.errors import Transient
from storage.models import ProjectState, StepOutcome, StepRun
from storage.projects import StaleProject
from sync import lifecycle, ops
from sync.app import make_locks, make_writer
from sync.consistency import fix, verify
from sync.rows import text_of

from conftest import Sheet

pytestmark = pytest.mark.databases  # every test here on SQLite and on PostgreSQL

WAIT = 60  # seconds; only ever reached when something is broken


@pytest.fixture
def step_row(sheet: Sheet) -> str:
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "分步", cols.image: sheet.image_cell(), cols.template: "tiny",
                              cols.mode: "分步", cols.shot_count: 1}])
    return rid


def act(sheet: Sheet, app, rid: str, action: str) -> None:
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {sheet.cols.action: action})
    app.once()


def to_segments_ready(sheet: Sheet, rid: str):
    app = sheet.app()
    app.once()
    act(sheet, app, rid, "继续")
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.segments_ready
    return app, project


def compose_runs(app, project_id: str) -> int:
    return sum(r.step == "compose" for r in app.store.steps(project_id))


def owed(app, project_id: str, event: str) -> int:
    return sum(n.event == event for n in app.stores.notes.of_project(project_id))


def test_a_refused_sheet_write_never_puts_a_completed_project_back(sheet, step_row, monkeypatch):
    app, project = to_segments_ready(sheet, step_row)
    read, release, calls = threading.Event(), threading.Event(), []
    real = lifecycle.sheet_refused

    def paused(p, message):  # the handler has read the project and is about to save it
        calls.append(p.state)
        if len(calls) == 1:
            read.set()
            assert release.wait(WAIT)
        return real(p, message)

    monkeypatch.setattr(lifecycle, "sheet_refused", paused)
    handler = threading.Thread(target=app.writer.flusher.on_permanent, args=(project.id, "列“封面”不存在"))
    handler.start()
    assert read.wait(WAIT)
    act(sheet, app, step_row, "继续")  # meanwhile the project is composed and completes
    assert app.store.get(project.id).state == ProjectState.completed
    release.set()
    handler.join(WAIT)

    # The handler's stale copy lost the race and was applied again to the completed project.
    assert calls == [ProjectState.segments_ready, ProjectState.completed]
    after = app.store.get(project.id)
    assert after.state == ProjectState.completed and "封面" in after.notice
    app.once()
    assert compose_runs(app, project.id) == 1 and owed(app, project.id, "completed") == 1


def test_reset_stuck_never_resets_a_project_that_finished_after_it_was_listed(sheet, step_row, monkeypatch):
    app, project = to_segments_ready(sheet, step_row)
    # A worker took the compose step and stopped answering (its lock is free): the project is stuck.
    app.life.commit(project.id, lambda q: lifecycle.step_started(q, 90, "合成成片"))
    real = ops.stuck

    def listed_then_finished(*args):
        found = real(*args)
        assert [p.id for p in found] == [project.id]
        app.life.commit(project.id, lambda q: lifecycle.step_succeeded(q, 100, "已完成"))  # it finishes after all
        return found

    monkeypatch.setattr(ops, "stuck", listed_then_finished)
    done = ops.reset_stuck(app.life, app.locks, app.clock(), timedelta(minutes=30), dry_run=False)
    assert done == [f"{project.id}: no longer running (completed); left alone"]
    app.once()
    assert app.store.get(project.id).state == ProjectState.completed
    assert compose_runs(app, project.id) == 0 and owed(app, project.id, "completed") == 1


def test_a_cancel_that_arrives_during_the_last_step_never_cancels_the_next_action(sheet, step_row, monkeypatch):
    app, project = to_segments_ready(sheet, step_row)
    real = compose_module.compose

    def cancel_then_compose(*args, **kwargs):
        # Past the step's last checkpoint, the user picks 取消; the poller sees the project busy.
        app.flush()  # as `run` does meanwhile: the 继续 it consumed is cleared in the row
        sheet.emu.set_cells(sheet.app_token, sheet.table_id, step_row, {sheet.cols.action: "取消"})
        app.poller.poll()
        assert app.store.cancel_requested(project.id)
        return real(*args, **kwargs)

    monkeypatch.setattr(compose_module, "compose", cancel_then_compose)
    act(sheet, app, step_row, "继续")
    monkeypatch.setattr(compose_module, "compose", real)
    assert app.store.get(project.id).state == ProjectState.completed  # too late to cancel
    assert not app.store.cancel_requested(project.id)

    act(sheet, app, step_row, "重新生成分镜")
    after = app.store.get(project.id)
    assert after.state == ProjectState.storyboard_ready  # step mode: the storyboard was made again
    assert text_of(sheet.row(step_row)["fields"][sheet.cols.status]) == "分镜完成"


def test_a_second_flusher_waits_so_an_older_value_never_lands_last(sheet, step_row, monkeypatch):
    app, project = to_segments_ready(sheet, step_row)
    cols, table = sheet.cols, app.table
    sending, release = threading.Event(), threading.Event()
    real = table.batch_update

    def slow_first(updates):
        if not sending.is_set():
            sending.set()
            assert release.wait(WAIT)
        return real(updates)

    monkeypatch.setattr(table, "batch_update", slow_first)
    app.life.commit(project.id, lambda q: (setattr(q, "progress_text", "旧值"), lifecycle.resync(q))[1])
    first = threading.Thread(target=app.flush)
    first.start()
    assert sending.wait(WAIT)  # `run` is sending the older value
    app.life.commit(project.id, lambda q: (setattr(q, "progress_text", "新值"), lifecycle.resync(q))[1])
    # `verify-consistency --fix` builds its writer the same way: it must not flush beside `run`.
    other = make_writer(sheet.settings, app.stores, table, app.life)
    assert other.flush() is False
    release.set()
    first.join(WAIT)
    assert other.drain(WAIT)
    assert text_of(sheet.row(step_row)["fields"][cols.progress]).endswith("新值")
    assert app.stores.outbox.size() == 0


def test_repair_leaves_a_project_alone_while_a_worker_holds_it(sheet, step_row):
    app, project = to_segments_ready(sheet, step_row)
    app.store.paths(project).segment(0).unlink()
    found = verify(app.store, None).mismatches
    assert found
    with app.locks.hold(project.id):
        done = fix(app.stores, sheet.settings, None, found, dry_run=False)
    assert done == [f"{project.id}: busy (a worker holds it); left alone, run the check again later"]
    assert app.store.get(project.id).state == ProjectState.segments_ready
    done = fix(app.stores, sheet.settings, None, found, dry_run=False)
    assert app.store.get(project.id).state == ProjectState.storyboard_ready


def test_versioned_saves_hold_across_processes_sharing_one_database(sheet, step_row):
    """Two processes = two engines on one file: a copy read by one and saved after the other's
    save is refused, and the change is applied again to the newer row."""
    app, project = to_segments_ready(sheet, step_row)
    other = sheet.app()  # its own engine and connection pool, as another process would have
    stale = other.store.get(project.id)
    app.life.commit(project.id, lambda q: lifecycle.step_started(q, 90, "合成成片"))
    stale.progress_text = "旧副本"
    with pytest.raises(StaleProject):
        other.store.save(stale)
    assert app.store.get(project.id).state == ProjectState.composing


class Killed(BaseException):
    """Stands in for the process dying mid-step (out of memory): nothing in the runner catches it."""


def test_a_step_that_keeps_killing_the_worker_fails_the_project_after_three_crashes(sheet, monkeypatch):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "崩溃", cols.image: sheet.image_cell(), cols.template: "tiny",
                              cols.shot_count: 1}])
    app = sheet.app()

    def dies(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(compose_module, "compose", dies)
    for _ in range(3):
        app.tick()
        app.pool.wait_idle(WAIT)
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.composing  # each death left it mid-step
    app.tick()  # the third resume
    app.pool.wait_idle(WAIT)
    app.drain_outbox(WAIT)
    project = app.store.get(project.id)
    assert project.state == ProjectState.failed and project.crash_resumes == 3
    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.status]) == "失败" and "连续 3 次" in text_of(row[cols.error])
    assert owed(app, project.id, "failed") == 1
    with app.store.session() as s:
        runs = s.exec(select(StepRun).where(StepRun.project_id == project.id, StepRun.step == "compose")).all()
    assert [r.outcome for r in runs] == [StepOutcome.crashed] * 3 and all(r.ended_at for r in runs)


def test_transient_errors_never_fail_the_project_while_attempts_are_left(sheet, monkeypatch):
    """A step retried after a temporary error is recorded as failed, the project is not."""
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    real, calls = compose_module.compose, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise Transient("合成服务暂时不可用，稍后自动重试")
        return real(*args, **kwargs)

    monkeypatch.setattr(compose_module, "compose", flaky)
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.segments_ready and project.retry_at is not None
    app.once()  # SHEETREEL_RETRY_BASE_SECONDS=0 in the suite: due again at once
    project = app.store.get(project.id)
    assert project.state == ProjectState.completed and owed(app, project.id, "failed") == 0
    outcomes = [r.outcome for r in app.store.steps(project.id) if r.step == "compose"]
    assert outcomes == [StepOutcome.failed, StepOutcome.succeeded]
    assert make_locks(sheet.settings).is_free(project.id)


def test_a_save_that_lands_while_a_step_commits_its_success_makes_it_apply_again(sheet, step_row, monkeypatch):
    """A preview drawn, or the gateway taking an edit, commits while a step commits its success
    (this one settles 取消 too, whose query flushes early): the step's commit is applied again to
    the newer copy, never lost in a crash of the step."""
    app, project = to_segments_ready(sheet, step_row)
    real, raced = lifecycle.step_succeeded, []

    def overtaken(q, *args, **kwargs):
        if not raced:
            raced.append(True)
            other = threading.Thread(target=lambda: app.life.commit(project.id, lifecycle.shots_drawn))
            other.start()
            other.join(WAIT)
            assert not other.is_alive()
        return real(q, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "step_succeeded", overtaken)
    act(sheet, app, step_row, "继续")
    assert raced and app.store.get(project.id).state == ProjectState.completed
    row = sheet.row(step_row)["fields"]
    assert text_of(row[sheet.cols.status]) == "已完成" and sheet.cols.error not in row
    assert compose_runs(app, project.id) == 1
