"""Feishu misbehaves (rate limits, 5xx pages, an outage); every sheet update still lands."""

from __future__ import annotations

import hashlib
import threading
import time

from connectors.feishu.emulator import FaultPlan
from storage.models import ProjectState
from sync import lifecycle
from sync.rows import text_of
from sync.sheet_view import progress_text

from conftest import Sheet


def test_every_update_lands_through_rate_limits_errors_and_an_outage(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d", SHEETREEL_MAX_ATTEMPTS=50, OUTBOX_BACKOFF_CAP_SECONDS=1,
                  POLL_INTERVAL_SECONDS=0.3, FLUSH_INTERVAL_SECONDS=0.2)
    cols = sheet.cols
    rids = sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                            cols.shot_count: i + 1} for i in range(4)])
    emulator.faults = FaultPlan(rate_limit=0.30, server_error=0.05, outage=(15, 30), reset_seconds=1, seed=3)
    app = sheet.app()
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        projects = app.store.projects()
        if len(projects) == 4 and all(lifecycle.is_final(p.state) for p in projects) and not app.stores.outbox.size():
            break
        time.sleep(0.3)
    stop.set()
    runner.join(60)

    injected = dict(emulator.faults_injected)
    calls = sum(emulator.calls.values())
    emulator.faults = FaultPlan()
    assert injected.get("rate_limit", 0) > 5 and injected.get("outage", 0) == 15
    for rid in rids:
        project = app.store.by_record(sheet.table_id, rid)
        assert project.state == ProjectState.completed, project.error
        row = sheet.row(rid)["fields"]
        assert text_of(row[cols.status]) == project.state.label
        assert text_of(row[cols.progress]) == progress_text(project)
        assert text_of(row[cols.project_id]) == project.id
        assert row[cols.final_url]["link"] == project.final_url
        assert cols.error not in row
        assert len(row[cols.final_video]) == 1 and len(row[cols.cover]) == 1
    # Retries are bounded: no storm of calls, and each file is uploaded once.
    assert calls < 400, dict(emulator.calls)
    distinct = set()
    for p in app.store.projects():
        paths = app.store.paths(p)
        distinct |= {hashlib.sha256(f.read_bytes()).hexdigest() for f in (paths.final_video, paths.cover)}
    uploaded = [m for m in emulator._state.media.values() if m.name in ("final.mp4", "cover.jpg")]
    assert len(uploaded) == len(distinct)


def test_an_outage_fails_no_project_drops_no_message_and_the_sheet_catches_up_within_30s(tmp_path):
    from bench import outage

    figures = outage.run(rows=5, outage=12, before=2, timeout=400, data_dir=tmp_path / "d")
    assert figures.faults.get("outage", 0) > 0 and figures.faults.get("rate_limit", 0) > 0, figures.line()
    assert (figures.completed, figures.failed) == (5, 0), figures.line()
    assert len(figures.announced) == 5 and set(figures.announced.values()) == {1}, figures.line()
    assert figures.lag_after_outage is not None and figures.lag_after_outage < 30, figures.line()
