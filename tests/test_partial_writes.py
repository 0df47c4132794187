"""Part of a write cannot land: a missing column, a deleted file, a table that is down, a slow row.
What can land still does, the row says what could not, and `once` shows progress as it goes."""

from __future__ import annotations

import threading

import pytest

from connectors.feishu.emulator import FaultPlan
from pipeline.storyboard import TemplateStoryboarder
from storage.models import ProjectState
from sync.cli import PENDING_WRITES, main
from sync.rows import text_of

from conftest import Sheet, table_schema, wait_for

pytestmark = pytest.mark.databases  # every test here on SQLite and on PostgreSQL

WAIT = 120


def use_cli(monkeypatch, sheet: Sheet) -> None:
    sheet.use_env(monkeypatch)


def test_a_table_missing_columns_still_gets_every_other_cell_and_says_what_is_missing(emulator, tmp_path,
                                                                                      monkeypatch, capsys):
    sheet = Sheet(emulator, tmp_path / "d")
    cols = sheet.cols
    gone = {cols.status, cols.segment(2)}  # deleted by a user; a table made with one segment column
    sheet.table_id = emulator.create_table(sheet.app_token, name="trimmed",
                                           fields=[c for c in table_schema() if c[0] not in gone])
    sheet.settings = sheet.settings.model_copy(update={"feishu_table_id": sheet.table_id})
    use_cli(monkeypatch, sheet)
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 2}])

    assert main(["once"]) == 0
    app = sheet.app()
    project = app.store.by_record(sheet.table_id, rid)
    assert project.state == ProjectState.completed and not project.error
    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.progress]).startswith("100%")
    assert row[cols.final_url]["link"] == project.final_url
    assert row[cols.segment(1)]["link"] and len(row[cols.final_video]) == 1 and len(row[cols.cover]) == 1
    assert "表格缺少「状态」「段2视频」列" in text_of(row[cols.error])

    capsys.readouterr()
    assert main(["health"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "状态" in failed[0] and "段2视频" in failed[0]

    # The user adds the columns back: the next repair fills them and the row's notice goes away.
    assert main(["init", "--create"]) == 0
    assert main(["verify-consistency", "--fix"]) in (0, 3)
    assert sheet.app().drain_outbox(WAIT)  # a fresh process: the old one looks at the columns once a minute
    row = sheet.row(rid)["fields"]
    assert text_of(row[cols.status]) == ProjectState.completed.label
    assert row[cols.segment(2)]["link"] and cols.error not in row
    capsys.readouterr()
    assert main(["health"]) == 0


def test_a_pending_write_whose_video_file_is_gone_still_lands_the_rest(sheet: Sheet):
    cols = sheet.cols
    rids = sheet.add_rows([{cols.title: f"行{i}", cols.image: sheet.image_cell(), cols.template: "tiny",
                            cols.shot_count: 1} for i in range(2)])
    app = sheet.app()
    app.tick()
    assert app.pool.wait_idle(WAIT)  # done, nothing flushed yet
    first = app.store.by_record(sheet.table_id, rids[0])
    app.store.paths(first).final_video.unlink()  # e.g. a cleanup ran before the write landed

    assert app.drain_outbox(WAIT)
    for rid in rids:
        project = app.store.by_record(sheet.table_id, rid)
        row = sheet.row(rid)["fields"]
        assert text_of(row[cols.status]) == ProjectState.completed.label
        assert row[cols.final_url]["link"] == project.final_url and len(row[cols.cover]) == 1
    assert cols.final_video not in sheet.row(rids[0])["fields"]
    assert len(sheet.row(rids[1])["fields"][cols.final_video]) == 1


class Held(TemplateStoryboarder):
    """Writes the storyboard of a scene containing 慢 only once released."""

    def __init__(self):
        self.release = threading.Event()

    def write(self, template, scene, shot_count, image):
        if "慢" in scene:
            assert self.release.wait(WAIT)
        return super().write(template, scene, shot_count, image)


def test_once_writes_finished_rows_back_while_a_slow_row_still_runs(sheet: Sheet):
    cols = sheet.cols
    fast, slow = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1,
                                  cols.scene: scene} for scene in ("快", "慢")])
    app = sheet.app()
    held = Held()
    app.runner.d.storyboarders["template"] = held
    once = threading.Thread(target=app.once)
    once.start()
    try:
        wait_for(lambda: text_of(sheet.row(fast)["fields"].get(cols.status)) == "已完成", WAIT)
        assert text_of(sheet.row(slow)["fields"].get(cols.status)) == ProjectState.storyboarding.label
    finally:
        held.release.set()
        once.join(WAIT)
    assert text_of(sheet.row(slow)["fields"][cols.status]) == "已完成"


def test_once_exits_with_its_own_code_when_writes_are_still_pending(sheet: Sheet, monkeypatch, capsys):
    use_cli(monkeypatch, sheet)
    cols = sheet.cols
    (rid,) = sheet.add_rows([{cols.image: sheet.image_cell(), cols.template: "tiny", cols.shot_count: 1}])
    sheet.emu.faults = FaultPlan(server_error=1.0, endpoints=frozenset({"records.batch_update"}))
    assert main(["once", "--wait-writes", "1"]) == PENDING_WRITES
    assert "still pending" in capsys.readouterr().err
    sheet.emu.faults = FaultPlan()
    assert main(["once"]) == 0
    assert text_of(sheet.row(rid)["fields"][cols.status]) == "已完成"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setenv("OUTBOX_BACKOFF_CAP_SECONDS", "0.2")
