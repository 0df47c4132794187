"""kill -9 and SIGTERM at awkward moments: every project still completes, nothing finished is redone."""

from __future__ import annotations

import signal
import subprocess

import pytest

from storage.models import ProjectState, SegmentState, StepOutcome
from sync import lifecycle
from sync.app import make_stores
from sync.rows import text_of

from conftest import Sheet, wait_for


def start(sheet: Sheet) -> subprocess.Popen:
    # These tests kill the worker on purpose; on a slow machine one step may see every kill.
    return sheet.start_run(SHEETREEL_MAX_CRASH_RESUMES="10")


def finished_segments(store) -> dict[tuple[str, int], int]:
    """(project, segment) -> file mtime of every segment the DB calls done."""
    out = {}
    for p in store.projects():
        for seg in store.segments(p.id):
            path = store.paths(p).segment(seg.index)
            if seg.state == SegmentState.done and path.exists():
                out[(p.id, seg.index)] = path.stat().st_mtime_ns
    return out


@pytest.fixture
def busy_sheet(sheet: Sheet) -> Sheet:
    cols = sheet.cols
    sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                     cols.shot_count: 6} for i in range(3)])
    return sheet


@pytest.mark.databases  # also on PostgreSQL: advisory locks die with the killed process
def test_kill_9_mid_segment_mid_compose_and_mid_flush_then_everything_completes(busy_sheet):
    sheet = busy_sheet
    stores = make_stores(sheet.settings)
    store = stores.projects
    kept: dict = {}

    def kill_when(condition) -> None:
        proc = start(sheet)
        try:
            wait_for(condition)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kept.update(finished_segments(store))

    def states() -> list[ProjectState]:
        return [p.state for p in store.projects()]

    kill_when(lambda: any(s == ProjectState.generating for s in states()) and len(finished_segments(store)) >= 2)
    kill_when(lambda: ProjectState.composing in states())
    kill_when(lambda: ProjectState.completed in states() and stores.outbox.size() > 0)

    proc = start(sheet)
    try:
        wait_for(lambda: all(s == ProjectState.completed for s in states()) and not stores.outbox.size(), timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)

    assert len(kept) >= 2
    now = finished_segments(store)
    assert {k: now[k] for k in kept} == kept, "a finished segment was generated again"
    for p in store.projects():
        assert len(store.segments(p.id)) == 6
        row = sheet.row(p.record_id)["fields"]
        assert text_of(row[sheet.cols.status]) == "已完成" and row[sheet.cols.final_url]["link"] == p.final_url
    # Every step a killed process left open was closed by the process that resumed it, as a crash.
    runs = [r for p in store.projects() for r in store.steps(p.id)]
    assert all(r.ended_at is not None for r in runs)
    assert any(r.outcome == StepOutcome.crashed for r in runs)
    for p in store.projects():
        last = {r.step: r.outcome for r in store.steps(p.id)}
        assert last == dict.fromkeys(("storyboard", "segments", "compose"), StepOutcome.succeeded)


def test_sigterm_checkpoints_the_step_and_the_next_start_resumes(busy_sheet):
    sheet = busy_sheet
    store = make_stores(sheet.settings).projects
    proc = start(sheet)
    wait_for(lambda: len(finished_segments(store)) >= 1)
    kept = finished_segments(store)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0, sheet.run_log.read_text(errors="replace")[-4000:]

    interrupted = [p for p in store.projects() if any(r.outcome == StepOutcome.interrupted for r in store.steps(p.id))]
    assert interrupted and all(not lifecycle.is_running(p.state) for p in store.projects())
    # A checkpoint on SIGTERM is not a crash: nothing counts against the project.
    assert all(p.crash_resumes == 0 for p in store.projects())

    proc = start(sheet)
    try:
        wait_for(lambda: all(p.state == ProjectState.completed for p in store.projects()), timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    now = finished_segments(store)
    assert {k: now[k] for k in kept} == kept
