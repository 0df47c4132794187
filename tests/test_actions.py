"""Row actions and step mode, driven the way operators drive them: by editing cells."""

from __future__ import annotations

import pytest

from storage.models import ProjectState, SegmentState
from sync.rows import text_of

from conftest import Sheet


@pytest.fixture
def step_row(sheet: Sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.title: "分步", cols.image: sheet.image_cell(), cols.scene: "小狗", cols.template: "tiny",
                              cols.mode: "分步", cols.shot_count: 3}])
    return rid


def act(sheet: Sheet, app, rid: str, action: str, **cells) -> None:
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {sheet.cols.action: action, **cells})
    app.once()


def cells(sheet: Sheet, rid: str) -> dict:
    return sheet.row(rid)["fields"]


def test_step_mode_rests_after_each_stage_and_uses_the_edited_storyboard(sheet, step_row):
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, step_row)
    assert project.state == ProjectState.storyboard_ready
    row = cells(sheet, step_row)
    assert text_of(row["状态"]) == "分镜完成" and text_of(row["分镜脚本"]).startswith("1. [zoom_in 1s]")

    # The operator trims the storyboard to two shots, changes a camera, then asks to go on.
    edited = "1. [static 1s] 小狗坐好\n\n2. [pan_right 2s] 小狗跑向镜头"
    act(sheet, app, step_row, "继续", 分镜脚本=edited)
    project = app.store.by_record(sheet.table_id, step_row)
    assert project.state == ProjectState.segments_ready
    assert [s.duration for s in app.store.segments(project.id)] == pytest.approx([1.0, 2.0], abs=0.05)
    row = cells(sheet, step_row)
    assert "操作" not in row and text_of(row["状态"]) == "视频段完成"

    act(sheet, app, step_row, "继续")
    project = app.store.by_record(sheet.table_id, step_row)
    assert project.state == ProjectState.completed
    assert project.final_duration == pytest.approx(3.0, abs=0.2)
    assert text_of(cells(sheet, step_row)["状态"]) == "已完成"


def test_a_storyboard_edited_into_nonsense_names_the_shot_and_changes_nothing(sheet, step_row):
    app = sheet.app()
    app.once()
    before = app.store.by_record(sheet.table_id, step_row)
    act(sheet, app, step_row, "继续", 分镜脚本="1. [zoom_in 1s] 好\n\n2. [spin 1s] 坏")
    after = app.store.by_record(sheet.table_id, step_row)
    assert after.state == ProjectState.storyboard_ready and after.storyboard_json == before.storyboard_json
    assert "第2个镜头的运镜“spin”无效" in text_of(cells(sheet, step_row)["错误信息"])


def test_redo_one_segment_remakes_it_and_what_follows_only(sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.scene: "猫", cols.template: "tiny", cols.shot_count: 3}])
    app = sheet.app()
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    paths = app.store.paths(project)
    stamps = [paths.segment(i).stat().st_mtime_ns for i in range(3)]

    act(sheet, app, rid, "重做第2段")
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed
    after = [paths.segment(i).stat().st_mtime_ns for i in range(3)]
    assert after[0] == stamps[0] and after[1] != stamps[1] and after[2] != stamps[2]
    assert "操作" not in cells(sheet, rid)


def test_retry_resumes_from_the_last_good_stage(sheet, file_server, emulator, tmp_path):
    www, base = file_server
    from connectors.feishu.protocol import FieldType

    from conftest import ASSETS

    sheet = Sheet(emulator, tmp_path / "retry", overrides={"首帧图片": FieldType.url})
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: {"text": "img", "link": f"{base}/late.jpg"}, cols.template: "tiny"}])
    app = sheet.app()
    app.once()
    assert app.store.by_record(sheet.table_id, rid).state == ProjectState.failed

    (www / "late.jpg").write_bytes((ASSETS / "sample_1.jpg").read_bytes())
    act(sheet, app, rid, "重试")
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed
    assert "错误信息" not in cells(sheet, rid)
    steps = [(r.step, r.ok) for r in app.store.steps(project.id)]
    assert steps == [("storyboard", False), ("storyboard", True), ("segments", True), ("compose", True)]


def test_cancel_a_waiting_project_and_start_it_again(sheet, step_row):
    app = sheet.app()
    app.once()
    act(sheet, app, step_row, "取消")
    assert app.store.by_record(sheet.table_id, step_row).state == ProjectState.cancelled
    assert text_of(cells(sheet, step_row)["状态"]) == "已取消"
    act(sheet, app, step_row, "开始")
    assert app.store.by_record(sheet.table_id, step_row).state == ProjectState.segments_ready


def test_cancel_while_running_stops_at_the_next_segment(sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 6}])
    app = sheet.app()
    project_holder = {}

    def cancel_after_first_segment(generate):
        def wrapped(req):
            generate(req)
            if not project_holder:
                project_holder["done"] = True
                sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.action: "取消"})
                app.poller.poll()  # the poller sees the busy project and files a cancel request
        return wrapped

    kb = app.runner.d.generators["kenburns"]
    kb.generate = cancel_after_first_segment(kb.generate)
    app.once()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.cancelled
    done = [s for s in app.store.segments(project.id) if s.state == SegmentState.done]
    assert len(done) == 1
    assert "操作" not in cells(sheet, rid)


@pytest.mark.parametrize("action,state_label,message", [
    ("继续", "已完成", "只有分步模式下"),
    ("合成", "待处理", "所有视频段完成后才能合成"),
    ("跳舞", "已完成", "操作“跳舞”无法识别"),
])
def test_an_action_that_does_not_fit_says_why_and_changes_nothing(sheet, action, state_label, message):
    cols = sheet.cols
    rows = [{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}]
    if state_label == "待处理":
        rows[0][cols.action] = action  # on a brand-new row, before anything ran
    (rid,) = sheet.add_rows(rows)
    app = sheet.app()
    if state_label == "已完成":
        app.once()
        before = app.store.by_record(sheet.table_id, rid)
        act(sheet, app, rid, action)
        after = app.store.by_record(sheet.table_id, rid)
        assert (after.state, after.final_url) == (before.state, before.final_url)
        assert len(app.store.steps(after.id)) == len(app.store.steps(before.id))
    else:
        app.poller.poll()
        app.drain_outbox(10)
    row = cells(sheet, rid)
    assert message in text_of(row["错误信息"])
    assert "操作" not in row


def test_an_action_is_taken_once_even_when_the_row_is_read_twice(sheet):
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    app = sheet.app()
    app.once()
    sheet.emu.set_cells(sheet.app_token, sheet.table_id, rid, {cols.action: "重新生成分镜"})
    app.poller.poll()
    app.poller.poll()  # the clearing write has not been flushed yet: same action, seen again
    app.pool.wait_idle()
    app.tick()
    app.pool.wait_idle()
    app.drain_outbox(10)
    project = app.store.by_record(sheet.table_id, rid)
    assert [r.step for r in app.store.steps(project.id)].count("storyboard") == 2
