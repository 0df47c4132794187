"""Polling cost scales with changes, not with table size."""

from __future__ import annotations

import threading

from storage.errors import BadInput, Unavailable
from storage.models import Project, ProjectState
from sync.app import make_links
from sync.poller import queue_rank
from sync.rows import text_of

from conftest import Sheet


def test_idle_poll_of_a_large_table_is_one_call(sheet: Sheet):
    cols = sheet.cols
    image = sheet.image_cell()
    rows = [{cols.title: f"行{i}", cols.image: image, cols.template: "no-such", cols.scene: "x"} for i in range(3000)]
    sheet.add_rows(rows)
    app = sheet.app()
    app.poller.poll()  # first sight: every row is new (all fail fast on the unknown template)
    app.drain_outbox(60)
    app.poller.poll()  # reads back our own writes once
    sheet.emu.reset_calls()

    app.poller.poll()
    assert dict(sheet.emu.calls) == {"records.search": 1}

    # A new process (cron's `sheetreel once`) knows when the table was last read in full: the same
    # one page, plus the column listing every process reads once (not the 6 pages of the table).
    sheet.emu.reset_calls()
    sheet.app().once()
    assert {k: v for k, v in sheet.emu.calls.items() if k != "token"} == {"fields.list": 1, "records.search": 1}

    # One user edit costs one call too, and is picked up.
    rid = app.store.projects()[0].record_id
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.template: "tiny"})
    sheet.emu.reset_calls()
    app.poller.poll()
    assert dict(sheet.emu.calls) == {"records.search": 1}
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.pending


def test_changed_inputs_restart_a_finished_row(sheet: Sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    first = app.store.by_record(sheet.table_id, rid)
    assert first.state == ProjectState.completed

    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.shot_count: 2})
    app.once()
    second = app.store.by_record(sheet.table_id, rid)
    assert second.id == first.id and second.state == ProjectState.completed and second.shot_count == 2
    assert abs(second.final_duration - 2.0) < 0.2
    assert cells_status(sheet, rid) == "已完成"


def test_a_table_without_a_modified_time_column_still_works(emulator, tmp_path):
    sheet = Sheet(emulator, tmp_path / "d")
    # Simulate an older table: rebuild it without the ModifiedTime column.
    from conftest import table_schema

    schema = [c for c in table_schema() if c[0] != sheet.cols.modified_time]
    sheet.table_id = emulator.create_table(sheet.app_token, name="old", fields=schema)
    sheet.settings = sheet.settings.model_copy(update={"feishu_table_id": sheet.table_id})
    (rid,) = sheet.add_rows([{sheet.cols.image: sheet.image_cell(), sheet.cols.template: "tiny", sheet.cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.completed


def cells_status(sheet: Sheet, rid: str) -> str:
    return text_of(sheet.row(rid)["fields"][sheet.cols.status])


def test_an_input_edit_while_the_project_is_busy_is_applied_once_it_is_free(sheet: Sheet):
    cols = sheet.cols
    rid, other = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1},
                                 {cols.template: "tiny"}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.shot_count: 2})
    # A later edit elsewhere moves the newest modified time past our row's.
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, other, {cols.title: "改了"})
    with app.locks.hold(project.id) as got:  # a worker is busy with it
        assert got
        app.poller.poll()
    assert app.store.get(project.id).shot_count == 1
    app.once()  # the edit was not lost: the next poll reads the row again
    project = app.store.get(project.id)
    assert project.shot_count == 2 and project.state == ProjectState.completed


def test_paging_past_500_changed_rows_while_users_edit_skips_no_row(sheet: Sheet):
    cols = sheet.cols
    image = sheet.image_cell()
    rids = sheet.add_rows([{cols.title: f"行{i}", cols.image: image, cols.template: "tiny", cols.mode: "分步",
                            cols.scene: "旧"} for i in range(1300)])
    app = sheet.app()
    app.poller.poll()
    assert app.drain_outbox(120)
    app.poller.poll()  # reads back our own writes once
    for rid in rids[:700]:  # more changed rows than one page holds
        sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.scene: "改1"})

    real = app.poller.table.search
    during = [rids[100], rids[650], rids[1200]]  # changed and read, changed and not yet read, unchanged

    def edited_between_pages(*args, **kwargs):
        for i, record in enumerate(real(*args, **kwargs)):
            yield record
            if i == 499:  # the first page is read; the next is not fetched yet
                for rid in during:
                    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.scene: "改2"})

    app.poller.table.search = edited_between_pages
    app.poller.poll()
    app.poller.table.search = real
    app.poller.poll()  # edits made during a poll are the next poll's news
    scenes = {p.record_id: p.scene for p in app.store.projects()}
    expected = {rid: "改2" if rid in during else "改1" if i < 700 else "旧" for i, rid in enumerate(rids)}
    assert scenes == expected


def test_new_rows_images_are_staged_several_at_once_and_the_rows_queued_in_order(sheet: Sheet):
    """The gateway fetches new rows' images side by side; the projects still come in row order, a
    bad image is still its row's error, and an image not reachable now leaves its row for later."""
    cols = sheet.cols
    rids = sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny"}
                           for i in range(6)])
    app = sheet.app()
    together = threading.Barrier(2, timeout=60)  # passes only while two stagings run at once
    bad, later = rids[1], rids[4]

    def stage(p: Project) -> None:
        together.wait()
        if p.record_id == bad:
            raise BadInput("首帧图片无法解码")
        if p.record_id == later:
            raise Unavailable("首帧图片还在从飞书取回")

    (link,) = make_links(sheet.settings, app.stores, app.life, app.locks, app.templates, app.clock, app.table,
                         stage=stage)
    link.poller.poll()

    made = sorted(app.store.projects(), key=queue_rank)
    assert [p.record_id for p in made] == [r for r in rids if r != later]
    assert {p.record_id: p.error for p in made if p.error} == {bad: "首帧图片无法解码"}
    assert all(p.state == ProjectState.pending for p in made if p.record_id != bad)
